package obscheck

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/testinfra"
)

// liveServices are the compose services the live collector test runs, one
// process each, named as compose names them.
var liveServices = []string{"websocket-server-1", "ai-consumer", "message-relay"}

// crashingService is the one the test makes crash (SIGQUIT: the Go runtime
// writes its goroutine dump, plain text, to stderr, as a panic does).
const crashingService = "message-relay"

// liveSystem is the chat services exporting to a collector.
type liveSystem struct {
	col     *testinfra.Collector
	jaeger  *testinfra.Jaeger
	procs   map[string]*testinfra.Process // by compose service
	gateway string                        // ws://host:port
}

// TestCollectorCarriesTracesAndLogs runs the collector at the compose
// version on the compose config (only its addresses changed) between the
// real services and the test's backends: traces go services → collector
// (OTLP/HTTP, as compose sets it) → Jaeger (OTLP/gRPC, where Tempo would
// be); every line the services print goes, as Docker's fluentd logging
// driver with the overlay's options would send it, to the collector's
// fluentforward receiver → the file exporter, in Loki's place. A message's
// lines must arrive labelled as the dashboards' LogQL selects them
// ({service="…"} |= "<correlation id>" | json) with the trace id Grafana's
// derived field links to the trace; the crash dump of a service, which is
// not JSON, must still carry its service.
func TestCollectorCarriesTracesAndLogs(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := startLiveSystem(t)
	corr := "collector-check-" + ids.New()
	c := testinfra.DialChat(t, s.gateway, devSecret, "collector-user")
	if err := c.Conn.WriteJSON(map[string]string{"type": "message", "content": "through the collector", "userid": "collector-user", "correlation_id": corr}); err != nil {
		t.Fatal(err)
	}
	c.Expect(t, "ack", 30*time.Second)
	c.Expect(t, "response", 30*time.Second)
	trace := waitTrace(t, s.jaeger, corr)
	t.Logf("trace %s through the collector after %s", trace.TraceID, time.Since(start).Round(time.Millisecond))

	if !s.procs[crashingService].Signal(syscall.SIGQUIT, 30*time.Second) {
		t.Fatalf("%s did not exit on SIGQUIT", crashingService)
	}
	sent := shipLogs(t, s)
	got := readShippedLogs(t, s.col.LogsFile, sent)
	t.Logf("%d log records through the collector after %s", len(got), time.Since(start).Round(time.Millisecond))
	checkLogLabels(t, got)
	checkMessageLogs(t, got, corr, trace)
	checkCrashLogs(t, got)
}

// startLiveSystem starts Jaeger, the collector, Redis, a broker and the
// services of liveServices with the compose overlay's OTEL_* settings, the
// exporter endpoint pointed at the collector.
func startLiveSystem(t *testing.T) *liveSystem {
	t.Helper()
	p := loadComposeProject(t)
	s := &liveSystem{jaeger: testinfra.StartJaeger(t), procs: map[string]*testinfra.Process{}}
	s.col = testinfra.StartCollector(t, s.jaeger.OTLPGRPCAddr)
	redis, kafka := testinfra.StartRedis(t), testinfra.StartKafka(t)
	for _, name := range liveServices {
		svc := p.Services[name]
		ops := testinfra.FreeAddr(t)
		env := []string{
			"KAFKA_BOOTSTRAP_SERVERS=" + kafka.Bootstrap(), "REDIS_URL=" + redis.URL(),
			"OPS_ADDR=" + ops, "LOG_LEVEL=debug", "LLM_OFFLINE=true", "OTEL_BSP_SCHEDULE_DELAY=100",
			"OTEL_EXPORTER_OTLP_ENDPOINT=" + s.col.OTLPEndpoint,
			"OTEL_EXPORTER_OTLP_PROTOCOL=" + composeEnv(t, svc, "OTEL_EXPORTER_OTLP_PROTOCOL"),
			"OTEL_SERVICE_NAME=" + composeEnv(t, svc, "OTEL_SERVICE_NAME"),
		}
		if strings.HasPrefix(name, "websocket-server") {
			http := testinfra.FreeAddr(t)
			env = append(env, "HTTP_ADDR="+http, "AUTH_SECRET="+devSecret, "INSTANCE_ID="+name)
			s.gateway = "ws://" + http
		}
		binary := composeEnv(t, svc, "OTEL_SERVICE_NAME") // the binaries are named after their services
		s.procs[name] = testinfra.StartProcess(t, name, binary, env, "http://"+ops+"/readyz")
	}
	return s
}

func composeEnv(t testing.TB, s types.ServiceConfig, key string) string {
	t.Helper()
	v, ok := s.Environment[key]
	if !ok || v == nil || *v == "" {
		t.Fatalf("compose: %s sets no %s", s.Name, key)
	}
	return *v
}

// waitTrace waits for the message's one trace, complete (delivered), with
// the spans of all three services.
func waitTrace(t *testing.T, j *testinfra.Jaeger, corr string) testinfra.JaegerTrace {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		traces, err := j.FindTraces("websocket-server", "correlation_id", corr)
		if err == nil && len(traces) == 1 && len(traces[0].ServiceNames()) == 3 && traces[0].HasOperation("chat.deliver") {
			return traces[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete trace for %s in Jaeger within 30s: err=%v, %d traces, services %v", corr, err, len(traces), j.Services())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// shipLogs sends every line each service printed to the collector the way
// Docker's fluentd driver would with the overlay's logging options, and
// returns how many records it sent.
func shipLogs(t *testing.T, s *liveSystem) int {
	t.Helper()
	p := loadComposeProject(t)
	n := 0
	for _, name := range liveServices {
		svc := p.Services[name]
		container := fmt.Sprintf("%s-%s-1", composeProject, name)
		tag, extra := dockerFluentdOptions(t, svc, container)
		records := testinfra.DockerLogRecords(tag, container, extra, s.procs[name].Logs(), stdoutIfJSON)
		if err := testinfra.SendFluent(s.col.ForwardAddr, records); err != nil {
			t.Fatal(err)
		}
		n += len(records)
	}
	return n
}

// stdoutIfJSON is where a line came from: the services log JSON to stdout;
// the runtime writes crashes to stderr.
func stdoutIfJSON(line string) string {
	if json.Valid([]byte(line)) {
		return "stdout"
	}
	return "stderr"
}

// dockerFluentdOptions reads a service's fluentd logging options as Docker
// applies them: the tag template and the record fields its `labels` and
// `env` options add (env wins a clash).
func dockerFluentdOptions(t *testing.T, s types.ServiceConfig, container string) (string, map[string]string) {
	t.Helper()
	if s.Logging == nil || s.Logging.Driver != "fluentd" {
		t.Fatalf("%s: not on the fluentd logging driver", s.Name)
	}
	opts := s.Logging.Options
	for _, unsupported := range []string{"labels-regex", "env-regex"} {
		if opts[unsupported] != "" {
			t.Fatalf("%s: logging option %s is not emulated by this test", s.Name, unsupported)
		}
	}
	tag := strings.ReplaceAll(opts["tag"], "{{.Name}}", container)
	if strings.Contains(tag, "{{") {
		t.Fatalf("%s: tag template %q is not emulated by this test", s.Name, opts["tag"])
	}
	extra := map[string]string{}
	for _, k := range splitTrimmed(opts["labels"], ",") {
		if v, ok := s.Labels[k]; ok {
			extra[k] = v
		}
	}
	for _, k := range splitTrimmed(opts["env"], ",") {
		if v, ok := s.Environment[k]; ok && v != nil {
			extra[k] = *v
		}
	}
	return tag, extra
}

// shippedLog is one log record as the collector exported it.
type shippedLog struct {
	resource map[string]string // what Loki's otlp_config turns into labels
	attrs    map[string]string
	body     string
}

// readShippedLogs waits until the file exporter has written want records
// (or 30 s passed) and returns them.
func readShippedLogs(t *testing.T, path string, want int) []shippedLog {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := parseOTLPLogsFile(path)
		if err == nil && len(got) >= want {
			if len(got) > want {
				t.Errorf("the collector exported %d log records for %d lines sent", len(got), want)
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector exported %d of %d log records within 30s (%v)", len(got), want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// otlpValue and otlpKV are the parts of OTLP/JSON the test reads.
type otlpValue struct {
	StringValue *string `json:"stringValue"`
}

type otlpKV struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

type otlpLogsRequest struct {
	ResourceLogs []struct {
		Resource struct {
			Attributes []otlpKV `json:"attributes"`
		} `json:"resource"`
		ScopeLogs []struct {
			LogRecords []struct {
				Body       otlpValue `json:"body"`
				Attributes []otlpKV  `json:"attributes"`
			} `json:"logRecords"`
		} `json:"scopeLogs"`
	} `json:"resourceLogs"`
}

// parseOTLPLogsFile reads the file exporter's output: one OTLP/JSON export
// request per line.
func parseOTLPLogsFile(path string) ([]shippedLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []shippedLog
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var req otlpLogsRequest
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		for _, rl := range req.ResourceLogs {
			res := otlpStrings(rl.Resource.Attributes)
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					out = append(out, shippedLog{resource: res, attrs: otlpStrings(lr.Attributes), body: deref(lr.Body.StringValue)})
				}
			}
		}
	}
	return out, sc.Err()
}

func otlpStrings(kvs []otlpKV) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		if kv.Value.StringValue != nil {
			m[kv.Key] = *kv.Value.StringValue
		}
	}
	return m
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkLogLabels: every record has the `service` label of the container it
// came from (nothing reaches Loki as unknown_service), and every JSON line
// the lower-case `level` label of its level. At most maxReported records
// are shown.
func checkLogLabels(t *testing.T, logs []shippedLog) {
	t.Helper()
	p := loadComposeProject(t)
	const maxReported = 10
	var bad []string
	for _, l := range logs {
		name := strings.TrimSuffix(strings.TrimPrefix(l.attrs["container_name"], "/"+composeProject+"-"), "-1")
		svc, ok := p.Services[name]
		if !ok {
			bad = append(bad, fmt.Sprintf("from an unknown container %q: %.200s", l.attrs["container_name"], l.body))
			continue
		}
		// The service its traces name, which Tempo's span → logs link selects.
		want := composeEnv(t, svc, "OTEL_SERVICE_NAME")
		var line struct{ Level string }
		switch {
		case l.resource["service"] != want:
			bad = append(bad, fmt.Sprintf("%s line (%s) with service label %q: %.200s", want, l.attrs["source"], l.resource["service"], l.body))
		case json.Unmarshal([]byte(l.body), &line) == nil && l.resource["level"] != strings.ToLower(line.Level):
			bad = append(bad, fmt.Sprintf("%s: level label %q for a %q line: %.200s", want, l.resource["level"], line.Level, l.body))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d records are labelled wrong, e.g.:\n%s", len(bad), len(logs), strings.Join(bad[:min(len(bad), maxReported)], "\n"))
	}
}

// checkMessageLogs: each service's lines about the message are found as the
// service dashboards' logs panel finds them, {service="<svc>"} |=
// "<correlation id>" | json, and carry the correlation id and the trace id
// that Grafana's Loki derived field extracts and links to the trace, whose
// spans name the same services (Tempo's span → logs link).
func checkMessageLogs(t *testing.T, logs []shippedLog, corr string, trace testinfra.JaegerTrace) {
	t.Helper()
	derived := lokiTraceIDMatcher(t)
	found := map[string]int{}
	for _, l := range logs {
		if !strings.Contains(l.body, corr) {
			continue
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(l.body), &line); err != nil {
			t.Errorf("%s: a line about the message is not JSON: %s", l.resource["service"], l.body)
			continue
		}
		m := derived.FindStringSubmatch(l.body)
		switch {
		case line["correlation_id"] != corr:
			t.Errorf("%s: correlation_id %v, want %s: %s", l.resource["service"], line["correlation_id"], corr, l.body)
		case m == nil || m[1] != trace.TraceID:
			t.Errorf("%s: the derived field %s finds %v, want trace %s: %s", l.resource["service"], derived, m, trace.TraceID, l.body)
		case line["service"] != l.resource["service"]:
			t.Errorf("line service %v under label %q: %s", line["service"], l.resource["service"], l.body)
		default:
			found[l.resource["service"]]++
		}
	}
	for _, svc := range trace.ServiceNames() {
		if found[svc] == 0 {
			t.Errorf(`{service=%q} |= %q | json finds no line with the message's ids (found: %v)`, svc, corr, found)
		}
	}
}

// lokiTraceIDMatcher is the Loki data source's derived field trace_id.
func lokiTraceIDMatcher(t *testing.T) *regexp.Regexp {
	t.Helper()
	var doc struct {
		Datasources []struct {
			UID      string `yaml:"uid"`
			JSONData struct {
				DerivedFields []struct {
					Name         string `yaml:"name"`
					MatcherRegex string `yaml:"matcherRegex"`
				} `yaml:"derivedFields"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	for _, f := range repoGlob(t, "observability/grafana/provisioning/datasources/*.yml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yamlUnmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, ds := range doc.Datasources {
			for _, df := range ds.JSONData.DerivedFields {
				if ds.UID == "loki" && df.Name == "trace_id" {
					return regexp.MustCompile(df.MatcherRegex)
				}
			}
		}
	}
	t.Fatal("the loki data source has no derived field trace_id")
	return nil
}

// checkCrashLogs: the crash dump, plain text on stderr, reached the logs
// pipeline (checkLogLabels checked its label with every other record's).
func checkCrashLogs(t *testing.T, logs []shippedLog) {
	t.Helper()
	if !slices.ContainsFunc(logs, func(l shippedLog) bool {
		return l.attrs["source"] == "stderr" && strings.HasPrefix(l.body, "SIGQUIT: quit")
	}) {
		t.Errorf("the crash dump's first line (SIGQUIT: quit) did not arrive")
	}
}
