package testinfra

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The real collector config derives: nothing of the compose network is
// left (no 0.0.0.0 listener, no tempo or loki host), the test's addresses
// are in, and a config that lost a substituted part is refused.
func TestDeriveCollectorConfig(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(RepoRoot(t), CollectorConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	a := CollectorAddrs{
		OTLPGRPC: "127.0.0.1:1", OTLPHTTP: "127.0.0.1:2", Forward: "127.0.0.1:3", Health: "127.0.0.1:4",
		Metrics: "127.0.0.1:5", Traces: "127.0.0.1:6", LogsFile: filepath.Join(t.TempDir(), "logs.jsonl"),
	}
	conf, err := DeriveCollectorConfig(src, a)
	if err != nil {
		t.Fatal(err)
	}
	var body []string // the config without its comments
	for _, l := range strings.Split(conf, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			body = append(body, l)
		}
	}
	got := strings.Join(body, "\n")
	for _, gone := range []string{"0.0.0.0", "endpoint: tempo", "//loki", "otlphttp/loki", "8888"} {
		if strings.Contains(got, gone) {
			t.Errorf("derived config still has %q:\n%s", gone, got)
		}
	}
	for _, want := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4", "port: 5", "endpoint: 127.0.0.1:6", "path: " + a.LogsFile, "[file/loki]"} {
		if !strings.Contains(got, want) {
			t.Errorf("derived config lacks %q:\n%s", want, got)
		}
	}
	if _, err := DeriveCollectorConfig([]byte(strings.ReplaceAll(string(src), "tempo:4317", "tempo:4319")), a); err == nil {
		t.Error("a config without the Tempo endpoint derived")
	}
}

// A port taken between FreeAddr and the collector's bind (by a process of
// another test package) makes the collector exit; it is started again on
// other ports instead of failing the test.
func TestStartCollectorRetriesATakenPort(t *testing.T) {
	taken := heldAddr(t)
	pick := collectorAddrs
	t.Cleanup(func() { collectorAddrs = pick })
	starts := 0
	collectorAddrs = func(t testing.TB, tracesTo string) CollectorAddrs {
		a := pick(t, tracesTo)
		if starts++; starts == 1 {
			a.OTLPGRPC = taken
		}
		return a
	}
	c := StartCollector(t, FreeAddr(t))
	if starts != 2 {
		t.Errorf("collector started %d times, want 2 (the first on a taken port)", starts)
	}
	resp, err := http.Post(c.OTLPEndpoint+"/v1/traces", "application/json", strings.NewReader(`{"resourceSpans":[]}`))
	if err != nil {
		t.Fatalf("the second collector does not take OTLP: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("OTLP/HTTP answered %s", resp.Status)
	}
}

// Jaeger, another collector build, is started again the same way.
func TestStartJaegerRetriesATakenPort(t *testing.T) {
	taken := heldAddr(t)
	pick := jaegerAddrs
	t.Cleanup(func() { jaegerAddrs = pick })
	starts := 0
	jaegerAddrs = func(t testing.TB) jaegerPorts {
		a := pick(t)
		if starts++; starts == 1 {
			a.otlp = taken
		}
		return a
	}
	j := StartJaeger(t)
	if starts != 2 {
		t.Errorf("jaeger started %d times, want 2 (the first on a taken port)", starts)
	}
	if !answersOK(j.QueryURL + "/api/services") {
		t.Errorf("the second Jaeger's query API does not answer")
	}
}

// heldAddr is a loopback address this test listens on until it ends: a
// port another process took.
func heldAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}
