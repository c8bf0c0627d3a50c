package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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

func TestCorrelationTravelsAsBaggageAndStampsSpans(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	rec := tracetest.NewSpanRecorder()
	tp, err := NewTracerProvider(context.Background(), "svc", "v")
	if err != nil {
		t.Fatal(err)
	}
	tp.RegisterSpanProcessor(rec)
	ctx := WithCorrelationID(context.Background(), "corr-42")

	// What a library does on the far side of a Kafka hop: extract from the
	// headers into a fresh context and start a span there.
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	far := Propagator.Extract(context.Background(), carrier)
	if got := CorrelationID(far); got != "corr-42" {
		t.Fatalf("correlation id across the hop: %q", got)
	}
	_, span := tp.Tracer("lib").Start(far, "receive")
	span.End()
	attrs := rec.Ended()[0].Attributes()
	found := false
	for _, a := range attrs {
		if a.Key == CorrelationAttr && a.Value.AsString() == "corr-42" {
			found = true
		}
	}
	if !found {
		t.Fatalf("span not stamped: %v", attrs)
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
