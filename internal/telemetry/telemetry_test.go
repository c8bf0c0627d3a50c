package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestLoggerAddsContextIDs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "svc", slog.LevelDebug)
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(WithCorrelationID(context.Background(), "corr-1"), "op")
	log.InfoContext(ctx, "hello", "k", "v")
	span.End()
	log.Info("no context")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"service": "svc", "correlation_id": "corr-1", "msg": "hello", "k": "v",
		"trace_id": span.SpanContext().TraceID().String(), "span_id": span.SpanContext().SpanID().String(),
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if strings.Contains(lines[1], "trace_id") || !strings.Contains(lines[1], `"service":"svc"`) {
		t.Errorf("line without context: %s", lines[1])
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Fatalf("bad level must name LOG_LEVEL: %v", err)
	}
}

func TestTracerProviderWithoutExporter(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tp, err := NewTracerProvider(context.Background(), "svc", "v")
	if err != nil {
		t.Fatal(err)
	}
	_, span := tp.Tracer("t").Start(context.Background(), "op")
	if !span.SpanContext().IsValid() {
		t.Fatal("spans need ids even without an exporter")
	}
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestTracerProviderBadProtocol(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
	if _, err := NewTracerProvider(context.Background(), "svc", "v"); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("want error naming the variable, got %v", err)
	}
}

func TestRegistryHasBuildInfo(t *testing.T) {
	reg := NewRegistry()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "chat_build_info" {
			found = true
		}
	}
	if !found {
		t.Fatal("chat_build_info missing")
	}
}

// The registry exports how long ready goroutines wait to run (the
// dashboards' "Wait for a CPU" panel) as a histogram with buckets, beside
// the Go collector's defaults, and no other runtime/metrics series.
func TestRegistryHasSchedulerLatency(t *testing.T) {
	done := make(chan struct{})
	go func() { close(done) }() // at least one goroutine made ready
	<-done
	mfs, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		names[mf.GetName()] = mf
	}
	sched := names["go_sched_latencies_seconds"]
	if sched == nil || sched.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("go_sched_latencies_seconds: %v, want a histogram", sched)
	}
	if h := sched.GetMetric()[0].GetHistogram(); len(h.GetBucket()) < 4 || h.GetSampleCount() == 0 {
		t.Fatalf("go_sched_latencies_seconds has %d buckets, %d samples", len(h.GetBucket()), h.GetSampleCount())
	}
	if names["go_goroutines"] == nil || names["go_memstats_heap_alloc_bytes"] == nil {
		t.Fatal("the Go collector's default series are missing")
	}
	for n := range names {
		if strings.HasPrefix(n, "go_sched_") && n != "go_sched_latencies_seconds" && n != "go_sched_gomaxprocs_threads" {
			t.Errorf("%s is exported too: only the scheduler latency was asked for", n)
		}
	}
}

// Spans started in a context with a correlation id — a library's as much as
// ours — carry it; a record from a producer that still sent it as baggage
// gives it too. It no longer travels as baggage itself.
func TestCorrelationStampsSpansAndIsReadFromOldBaggage(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	rec := tracetest.NewSpanRecorder()
	tp, err := NewTracerProvider(context.Background(), "svc", "v")
	if err != nil {
		t.Fatal(err)
	}
	tp.RegisterSpanProcessor(rec)
	ctx := WithCorrelationID(context.Background(), "corr-42")
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	if _, ok := carrier["baggage"]; ok {
		t.Fatalf("correlation id sent as baggage: %v", carrier)
	}

	old := propagation.MapCarrier{"baggage": BaggageKey + "=corr-7"}
	far := Propagator.Extract(context.Background(), old)
	if got := CorrelationID(far); got != "corr-7" {
		t.Fatalf("correlation id from an older producer's baggage: %q", got)
	}
	for _, c := range []struct {
		ctx  context.Context
		want string
	}{{ctx, "corr-42"}, {far, "corr-7"}} {
		rec.Reset()
		_, span := tp.Tracer("lib").Start(c.ctx, "op")
		span.End()
		attrs := rec.Ended()[0].Attributes()
		if !slices.Contains(attrs, CorrelationAttr.String(c.want)) {
			t.Fatalf("span not stamped with %s: %v", c.want, attrs)
		}
	}
}

func TestObserveWithTraceAddsExemplar(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x_seconds", Help: "x", Buckets: []float64{1}})
	reg.MustRegister(h)
	tp := sdktrace.NewTracerProvider()
	_, span := tp.Tracer("t").Start(context.Background(), "op")
	ObserveWithTrace(h, 0.5, span)
	ObserveWithTrace(h, 0.7, nil)
	mfs, _ := reg.Gather()
	ex := mfs[0].GetMetric()[0].GetHistogram().GetBucket()[0].GetExemplar()
	if ex == nil || ex.GetLabel()[0].GetValue() != span.SpanContext().TraceID().String() {
		t.Fatalf("exemplar %v", ex)
	}
	if mfs[0].GetMetric()[0].GetHistogram().GetSampleCount() != 2 {
		t.Fatal("observation without a span lost")
	}
}

// A logger made without a level logs at info, as slog's handlers do (a nil
// level once panicked on the first library line).
func TestNewLoggerWithoutLevel(t *testing.T) {
	var b bytes.Buffer
	l := NewLogger(&b, "svc", nil).With(LibraryKey, "franz-go")
	l.Info("chatter")
	l.Warn("trouble")
	if strings.Contains(b.String(), "chatter") || !strings.Contains(b.String(), "trouble") {
		t.Fatalf("logged %q", b.String())
	}
}
