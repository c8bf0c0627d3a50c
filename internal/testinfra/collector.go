package testinfra

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CollectorConfigPath is the compose collector's config, relative to the
// repo root.
const CollectorConfigPath = "observability/otel-collector/config.yml"

// Collector is a running OpenTelemetry Collector (tools/otelcol) on a test
// copy of the compose config.
type Collector struct {
	OTLPEndpoint string // http://host:port, for OTEL_EXPORTER_OTLP_ENDPOINT
	ForwardAddr  string // host:port of the fluentforward receiver (Docker's fluentd driver)
	LogsFile     string // the logs pipeline's output: OTLP JSON, one request a line
	ConfigPath   string // the derived config the collector runs
}

// CollectorAddrs are the addresses a derived config listens on and sends to.
type CollectorAddrs struct {
	OTLPGRPC, OTLPHTTP, Forward, Health, Metrics string // listen host:port
	Traces                                       string // OTLP/gRPC host:port for the traces exporter
	LogsFile                                     string // the file the logs exporter writes
}

// collectorSubst is one textual substitution of DeriveCollectorConfig.
type collectorSubst struct {
	what string
	re   *regexp.Regexp
	repl string
}

// DeriveCollectorConfig returns the compose collector config with only
// its addresses changed, the way DeriveNginxConfig treats nginx.conf:
// every listener on a loopback port of a, the Tempo exporter's endpoint at
// a.Traces, and the Loki exporter swapped for the file exporter writing
// a.LogsFile (no Loki in the tests). Everything else — receivers,
// processors, their statements, the pipelines — is the real config. Each
// substitution must apply, so a changed config fails loudly here instead of
// running half-derived.
func DeriveCollectorConfig(conf []byte, a CollectorAddrs) (string, error) {
	out := string(conf)
	for _, s := range []collectorSubst{
		{"OTLP gRPC receiver", regexp.MustCompile(`0\.0\.0\.0:4317\b`), a.OTLPGRPC},
		{"OTLP HTTP receiver", regexp.MustCompile(`0\.0\.0\.0:4318\b`), a.OTLPHTTP},
		{"fluentforward receiver", regexp.MustCompile(`0\.0\.0\.0:24224\b`), a.Forward},
		{"health_check", regexp.MustCompile(`0\.0\.0\.0:13133\b`), a.Health},
		{"own metrics", regexp.MustCompile(`host: 0\.0\.0\.0(\s+)port: 8888\b`), metricsRepl(a.Metrics)},
		{"Tempo exporter", regexp.MustCompile(`endpoint: tempo:4317\b`), "endpoint: " + a.Traces},
		{"Loki exporter", regexp.MustCompile(`(?m)^( +)otlphttp/loki:\n +endpoint: \S+\n`),
			"${1}file/loki:\n${1}  path: " + a.LogsFile + "\n${1}  flush_interval: 100ms\n"},
		{"Loki exporter in the pipeline", regexp.MustCompile(`\botlphttp/loki\b`), "file/loki"},
	} {
		if !s.re.MatchString(out) {
			return "", fmt.Errorf("%s: %s not found (%s)", CollectorConfigPath, s.what, s.re)
		}
		out = s.re.ReplaceAllString(out, s.repl)
	}
	return out, nil
}

func metricsRepl(addr string) string {
	host, port, _ := strings.Cut(addr, ":")
	return "host: " + host + "${1}port: " + port
}

// StartCollector runs the collector built by `make tools` on a config
// derived from the compose one (DeriveCollectorConfig), sending traces to
// tracesTo (OTLP/gRPC host:port, e.g. Jaeger.OTLPGRPCAddr), until the test
// ends. It returns once the health check answers.
//
// A collector that exits because one of its ports was taken (waitReady) is
// started again on other ports, up to three times.
func StartCollector(t testing.TB, tracesTo string) *Collector {
	t.Helper()
	bin := ToolBinary(t, "otelcol")
	return retryTakenPorts(t, "otelcol", func() (*Collector, error) {
		return startCollector(t, bin, collectorAddrs(t, tracesTo))
	})
}

// collectorAddrs picks the addresses of one start; tests replace it to
// hand the collector a port that is taken.
var collectorAddrs = func(t testing.TB, tracesTo string) CollectorAddrs {
	dir := t.TempDir()
	return CollectorAddrs{
		OTLPGRPC: FreeAddr(t), OTLPHTTP: FreeAddr(t), Forward: FreeAddr(t), Health: FreeAddr(t), Metrics: FreeAddr(t),
		Traces: tracesTo, LogsFile: filepath.Join(dir, "logs.jsonl"),
	}
}

// errPortTaken is a collector that exited because a port it was to listen
// on was taken.
var errPortTaken = errors.New("a listen port was taken")

func startCollector(t testing.TB, bin string, a CollectorAddrs) (*Collector, error) {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(RepoRoot(t), CollectorConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := DeriveCollectorConfig(src, a)
	if err != nil {
		t.Fatal(err)
	}
	c := &Collector{
		OTLPEndpoint: "http://" + a.OTLPHTTP, ForwardAddr: a.Forward, LogsFile: a.LogsFile,
		ConfigPath: filepath.Join(dir, "config.yml"),
	}
	if err := os.WriteFile(c.ConfigPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "otelcol.log")
	exited := startCollectorProcess(t, bin, c.ConfigPath, logPath)
	if err := waitReady("otelcol", func() bool { return answersOK("http://" + a.Health + "/") }, logPath, exited); err != nil {
		return nil, err
	}
	return c, nil
}

// startCollectorProcess starts the collector; t.Cleanup stops it (SIGTERM
// lets the file exporter flush) and shows its log when the test failed.
// The channel is closed when the process has exited.
func startCollectorProcess(t testing.TB, bin, config, logPath string) <-chan struct{} {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config="+config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start otelcol: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- otelcol log (last 4 KiB) ----\n%s", tail(string(b), 4096))
		}
	})
	return done
}

// waitReady waits up to a minute for ready to report true; a tool (the
// collector, Jaeger) that exits first is an error, errPortTaken when its
// log says a port was taken — its ports are picked free (FreeAddr) before
// it binds them, and a process of another test package may take one in
// between.
func waitReady(what string, ready func() bool, logPath string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ready() {
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			if strings.Contains(string(b), "address already in use") {
				return fmt.Errorf("%s exited: %w:\n%s", what, errPortTaken, tail(string(b), 1024))
			}
			return fmt.Errorf("%s exited before it was ready:\n%s", what, tail(string(b), 4096))
		case <-time.After(100 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(logPath)
	return fmt.Errorf("%s not ready within 60s:\n%s", what, tail(string(b), 4096))
}

// answersOK reports whether a GET of url answers 200.
func answersOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// retryTakenPorts runs start up to three times while it fails with
// errPortTaken (each time on ports picked afresh); another error, or the
// third, fails the test.
func retryTakenPorts[T any](t testing.TB, what string, start func() (T, error)) T {
	t.Helper()
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil {
			return v
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%s, attempt %d: %v; again on other ports", what, attempt, err)
	}
}
