package kafka

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/telemetry"
)

// BenchmarkTraceHop is the tracing work one record costs on one Kafka hop
// besides the consumer's process span (the same in both): "kotel" as the
// services did it until the produce hook of tracectx.go replaced it — a
// publish span around the produce and a receive span around the fetch —
// and "headers" as now: the trace context written and read back. SDK
// tracer as the services build it (every span sampled, no exporter).
func BenchmarkTraceHop(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	b.Setenv("OTEL_TRACES_SAMPLER", "")
	useGlobalPropagator(b)
	sdk, err := telemetry.NewTracerProvider(context.Background(), "bench", "dev")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdk)
	b.Cleanup(func() { otel.SetTracerProvider(prev) })

	e := benchResponse()
	ctx, span := sdk.Tracer("producer").Start(telemetry.WithCorrelationID(context.Background(), e.CorrelationID), "process incoming_messages")
	defer span.End()
	record := func(b *testing.B) *kgo.Record {
		r, err := EnvelopeRecord(TopicResponses, e)
		if err != nil {
			b.Fatal(err)
		}
		r.Context = ctx
		return r
	}
	check := func(b *testing.B, got context.Context) {
		if trace.SpanContextFromContext(got).TraceID() != span.SpanContext().TraceID() {
			b.Fatal("the consumer is not in the producer's trace")
		}
	}

	b.Run("kotel", func(b *testing.B) {
		tr := kotel.NewTracer(kotel.TracerProvider(sdk), kotel.TracerPropagator(telemetry.Propagator))
		b.ReportAllocs()
		for b.Loop() {
			r := record(b)
			tr.OnProduceRecordBuffered(r)
			tr.OnProduceRecordUnbuffered(r, nil)
			fetched := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
			tr.OnFetchRecordBuffered(fetched)
			tr.OnFetchRecordUnbuffered(fetched, true)
			check(b, trace.ContextWithSpan(context.Background(), trace.SpanFromContext(fetched.Context)))
		}
	})
	b.Run("headers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := record(b)
			traceHeaders{}.OnProduceRecordBuffered(r)
			fetched := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
			check(b, RecordContext(context.Background(), fetched))
		}
	})
}
