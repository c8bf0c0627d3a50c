package telemetry

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// scopeSpan is a span as the processor sees it at its start; the embedded
// interface is nil, since OnStart needs only the two methods below.
type scopeSpan struct {
	sdktrace.ReadWriteSpan
	scope string
	set   []attribute.KeyValue
}

func (s *scopeSpan) InstrumentationScope() instrumentation.Scope {
	return instrumentation.Scope{Name: s.scope}
}
func (s *scopeSpan) SetAttributes(kv ...attribute.KeyValue) { s.set = append(s.set, kv...) }

// The processor stamps a library's span, and leaves the project's own,
// which start with the id: stamped again, the SDK would copy the span's
// attributes and de-duplicate them when it ends.
func TestCorrelationProcessorStampsOnlyLibrarySpans(t *testing.T) {
	ctx := WithCorrelationID(context.Background(), "corr-1")
	lib := &scopeSpan{scope: "github.com/redis/go-redis/extra/redisotel"}
	correlationProcessor{}.OnStart(ctx, lib)
	if !slices.Equal(lib.set, []attribute.KeyValue{CorrelationAttr.String("corr-1")}) {
		t.Fatalf("library span: set %v, want the correlation id", lib.set)
	}
	own := &scopeSpan{scope: OwnScopePrefix + "internal/relay"}
	correlationProcessor{}.OnStart(ctx, own)
	if len(own.set) != 0 {
		t.Fatalf("own span: processor set %v, want nothing (it starts with the id)", own.set)
	}
}

func TestCorrelationStart(t *testing.T) {
	tp, rec := recordSpans(t)
	ctx := WithCorrelationID(context.Background(), "corr-2")
	extra := attribute.String("k", "v")
	for _, c := range []struct {
		ctx  context.Context
		want []attribute.KeyValue
	}{
		{ctx, []attribute.KeyValue{extra, CorrelationAttr.String("corr-2")}},
		{context.Background(), []attribute.KeyValue{extra}}, // no id: no empty attribute
	} {
		rec.Reset()
		_, span := tp.Tracer(OwnScopePrefix+"test").Start(c.ctx, "op", CorrelationStart(c.ctx, extra))
		span.End()
		if got := rec.Ended()[0].Attributes(); !slices.Equal(got, c.want) {
			t.Fatalf("attributes %v, want %v", got, c.want)
		}
	}
}

// recordSpans is a tracer provider as the services build it, recording
// the spans that end.
func recordSpans(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	tp, err := NewTracerProvider(context.Background(), "svc", "v")
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec)
	return tp, rec
}

// BenchmarkOwnSpan is one of the project's spans as chat.deliver starts
// it: five attributes, the correlation id among them, in a context that
// carries the id.
func BenchmarkOwnSpan(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	tp, err := NewTracerProvider(context.Background(), "svc", "v")
	if err != nil {
		b.Fatal(err)
	}
	tracer := tp.Tracer("github.com/chatrelay/chat/bench")
	ctx := WithCorrelationID(context.Background(), "0193b3c2-7d4e-7000-8000-000000000001")
	b.ReportAllocs()
	for range b.N {
		_, span := tracer.Start(ctx, "chat.deliver", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(CorrelationAttr.String("0193b3c2-7d4e-7000-8000-000000000001"),
				attribute.String("messaging.message.id", "m"), attribute.String("chat.reply_to", "r"),
				attribute.String("chat.instance", "gw-1"), attribute.Bool("chat.replayed", false)))
		span.End()
	}
}
