package testinfra

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// JaegerBinary returns the path of Jaeger (built from tools/jaeger by
// `make tools`; see ToolBinary).
func JaegerBinary(t testing.TB) string {
	t.Helper()
	return ToolBinary(t, "jaeger")
}

// Jaeger is a running Jaeger (in-memory storage) taking OTLP over HTTP.
type Jaeger struct {
	OTLPEndpoint string // http://host:port for OTEL_EXPORTER_OTLP_ENDPOINT
	OTLPGRPCAddr string // host:port of OTLP over gRPC (a collector's otlp exporter)
	QueryURL     string // http://host:port of the query API
}

// StartJaeger runs Jaeger on free loopback ports until the test ends. One
// that exits because a port was taken before it bound it (waitReady) is
// started again on other ports, up to three times.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := JaegerBinary(t)
	return retryTakenPorts(t, "jaeger", func() (*Jaeger, error) { return startJaeger(t, bin, jaegerAddrs(t)) })
}

// jaegerPorts are the addresses Jaeger listens on.
type jaegerPorts struct{ otlp, otlpGRPC, query, grpc, health string }

// jaegerAddrs picks the addresses of one start; tests replace it to hand
// Jaeger a port that is taken.
var jaegerAddrs = func(t testing.TB) jaegerPorts {
	return jaegerPorts{FreeAddr(t), FreeAddr(t), FreeAddr(t), FreeAddr(t), FreeAddr(t)}
}

func startJaeger(t testing.TB, bin string, a jaegerPorts) (*Jaeger, error) {
	t.Helper()
	dir := t.TempDir()
	otlp, otlpGRPC, query, grpc, health := a.otlp, a.otlpGRPC, a.query, a.grpc, a.health
	conf := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %s
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
      grpc:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`, health, query, grpc, otlp, otlpGRPC)
	confPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "jaeger.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", "file:"+confPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logf.Close()
	})
	j := &Jaeger{OTLPEndpoint: "http://" + otlp, OTLPGRPCAddr: otlpGRPC, QueryURL: "http://" + query}
	if err := waitReady("jaeger", func() bool { return answersOK(j.QueryURL + "/api/services") }, logPath, exited); err != nil {
		return nil, err
	}
	return j, nil
}

// JaegerSpan is the part of a span the tests look at.
type JaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// Tag returns the string form of a span tag.
func (s JaegerSpan) Tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// JaegerTrace is one trace with its spans and the service of each process.
type JaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []JaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// Service returns the service that emitted s.
func (tr JaegerTrace) Service(s JaegerSpan) string { return tr.Processes[s.ProcessID].ServiceName }

// ServiceNames lists the services that emitted the trace's spans, sorted.
func (tr JaegerTrace) ServiceNames() []string {
	var out []string
	for _, sp := range tr.Spans {
		if s := tr.Service(sp); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// HasOperation reports whether a span of the trace is named op.
func (tr JaegerTrace) HasOperation(op string) bool {
	return slices.ContainsFunc(tr.Spans, func(s JaegerSpan) bool { return s.OperationName == op })
}

// FindTraces searches service's traces holding a span tagged key=value.
func (j *Jaeger) FindTraces(service, key, value string) ([]JaegerTrace, error) {
	tags, _ := json.Marshal(map[string]string{key: value})
	q := url.Values{"service": {service}, "tags": {string(tags)}, "limit": {"20"}, "lookback": {"1h"}}
	resp, err := http.Get(j.QueryURL + "/api/traces?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Data   []JaegerTrace `json:"data"`
		Errors any           `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger query: HTTP %d: %v", resp.StatusCode, out.Errors)
	}
	return out.Data, nil
}

// Services lists the services Jaeger has seen.
func (j *Jaeger) Services() []string {
	resp, err := http.Get(j.QueryURL + "/api/services")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out struct {
		Data []string `json:"data"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return out.Data
}
