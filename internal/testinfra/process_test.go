package testinfra

import (
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/config"
)

// A service process a test starts runs with the images' GODEBUG, and a
// test's own GODEBUG replaces it.
func TestProcessRunsWithTheImagesGODEBUG(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"shipped", nil, "GODEBUG=" + config.SysmonGODEBUG},
		{"test's own", []string{"GODEBUG=x=1"}, "GODEBUG=x=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// env(1) prints the environment it was given and exits.
			p := StartProcessFrom(t, "/usr/bin", "env", "env", tc.env, "")
			if !p.Wait(10 * time.Second) {
				t.Fatal("env did not exit")
			}
			var got []string
			for _, line := range strings.Split(p.Logs(), "\n") {
				if strings.HasPrefix(line, "GODEBUG=") {
					got = append(got, line)
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("GODEBUG lines %q, want exactly %q", got, tc.want)
			}
		})
	}
}
