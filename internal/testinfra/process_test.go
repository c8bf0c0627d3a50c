package testinfra

import (
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/config"
)

// A service process a test starts runs with the images' GODEBUG and the
// deployments' GOMAXPROCS, and a test's own setting of either replaces it.
func TestProcessRunsWithTheShippedRuntimeSettings(t *testing.T) {
	shipped := map[string]string{"GODEBUG": config.SysmonGODEBUG, "GOMAXPROCS": config.DeployedGOMAXPROCS}
	for _, tc := range []struct {
		name string
		env  []string
		want map[string]string
	}{
		{"shipped", nil, shipped},
		{"test's own GODEBUG", []string{"GODEBUG=x=1"}, map[string]string{"GODEBUG": "x=1", "GOMAXPROCS": config.DeployedGOMAXPROCS}},
		{"test's own GOMAXPROCS", []string{"GOMAXPROCS="}, map[string]string{"GODEBUG": config.SysmonGODEBUG, "GOMAXPROCS": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// env(1) prints the environment it was given and exits.
			p := StartProcessFrom(t, "/usr/bin", "env", "env", tc.env, "")
			if !p.Wait(10 * time.Second) {
				t.Fatal("env did not exit")
			}
			for name, want := range tc.want {
				var got []string
				for _, line := range strings.Split(p.Logs(), "\n") {
					if strings.HasPrefix(line, name+"=") {
						got = append(got, line)
					}
				}
				// os/exec passes the last value of a variable set
				// twice, so the process sees each once.
				if len(got) != 1 || got[0] != name+"="+want {
					t.Errorf("%s lines %q, want exactly %q", name, got, name+"="+want)
				}
			}
		})
	}
}
