package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// A short run of the real binary against the real system (the one-process
// dev stack): 20 users × 5 msg/s for 3 s, spread over two worker processes
// and two source addresses. It checks integrity and the output, not speed.
func TestSmokeAgainstDevStack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the dev stack")
	}
	httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	testinfra.StartProcess(t, "devstack", "devstack", []string{
		"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + testSecret, "LOG_LEVEL=warn", "RATE_USER_MESSAGES_PER_MIN=0", "LIMIT_IP_CONNECTS_PER_MIN=0",
	}, "http://"+opsAddr+"/readyz")

	out := filepath.Join(t.TempDir(), "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testinfra.BuildServices(t), "loadgen"),
		"-url", "ws://"+httpAddr, "-metrics", "http://"+opsAddr, "-users", "20", "-user-rate", "5", "-duration", "3s",
		"-drain", "60s", "-procs", "2", "-source-ips", "127.0.0.2,127.0.0.3", "-progress", "1s", "-settle", "500ms", "-json", out)
	cmd.Env = append(os.Environ(), "AUTH_SECRET="+testSecret)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("loadgen: %v", err)
	}

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	checkJSONFields(t, b)
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	m := res.Messages
	if !res.OK || m.Lost != 0 || m.Duplicated != 0 || m.Unmatched != 0 || m.Sent == 0 || m.Answered != m.Sent || m.Acked != m.Sent {
		t.Fatalf("ok=%v problems=%q messages %+v", res.OK, res.Problems, m)
	}
	if res.Processes != 2 || res.Connect.Connected != 20 || res.Latency.Count != m.Answered {
		t.Errorf("processes %d, connected %d, latency count %d", res.Processes, res.Connect.Connected, res.Latency.Count)
	}
	if len(res.Servers) != 1 {
		t.Fatalf("servers %+v", res.Servers)
	}
	s := res.Servers[0]
	if s.Before == nil || s.Peak == nil || s.After == nil || s.Peak.WSConnections != 20 || s.Peak.RSSBytes == 0 || s.Peak.Goroutines == 0 {
		t.Errorf("server samples: before %+v peak %+v after %+v (errors %d: %s)", s.Before, s.Peak, s.After, s.ScrapeErrors, s.LastError)
	}
}
