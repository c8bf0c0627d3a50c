package kafka

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/telemetry"
)

func TestTracingParentsProcessSpanOnTheProducersSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	prevProp := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(telemetry.Propagator)
	t.Cleanup(func() { otel.SetTextMapPropagator(prevProp) })
	parentCtx, parent := tp.Tracer("t").Start(context.Background(), "chat.receive")
	// What the consumer fetches: the headers the producer's hook wrote, no
	// in-process context.
	r := &kgo.Record{Topic: "incoming_messages", Partition: 3, Offset: 7, Key: []byte("u1"), Context: parentCtx}
	traceHeaders{}.OnProduceRecordBuffered(r)
	r.Context = nil
	for _, fail := range []bool{false, true} {
		_ = Tracing("g")(func(ctx context.Context, _ *kgo.Record) error {
			if trace.SpanContextFromContext(ctx).TraceID() != parent.SpanContext().TraceID() {
				t.Fatal("handler context is not in the record's trace")
			}
			if fail {
				return errors.New("bad")
			}
			return nil
		})(context.Background(), r)
	}
	parent.End()
	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("want 3 spans, got %d", len(spans))
	}
	for i, s := range spans[:2] {
		if s.Name() != "process incoming_messages" || s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanKind() != trace.SpanKindConsumer {
			t.Fatalf("span %d: %s parent %v kind %v", i, s.Name(), s.Parent().SpanID(), s.SpanKind())
		}
	}
	if spans[1].Status().Code != codes.Error {
		t.Fatal("failed handling must mark the span as error")
	}
}
