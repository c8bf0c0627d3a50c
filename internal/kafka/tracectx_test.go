package kafka

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/telemetry"
)

func useGlobalPropagator(t testing.TB) {
	prev := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(telemetry.Propagator)
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
}

// The produce hook writes the trace context of the record's Context, and a
// consumer's RecordContext reads back the same span context and baggage: the
// next hop's spans join the producer's trace without a span of the hook's own.
func TestTraceContextCrossesARecord(t *testing.T) {
	useGlobalPropagator(t)
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "chat.receive")
	defer span.End()
	member, _ := baggage.NewMember("tenant", "a")
	bag, _ := baggage.New(member)
	ctx = baggage.ContextWithBaggage(ctx, bag)

	r, err := EnvelopeRecord(TopicIncoming, &envelope.Envelope{Type: envelope.TypeMessage, ID: "m1", UserID: "u1", Content: "hi", CorrelationID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	r.Context = ctx
	traceHeaders{}.OnProduceRecordBuffered(r)
	if Header(r, "traceparent") == "" || Header(r, HeaderCorrelationID) != "c1" {
		t.Fatalf("headers %v", r.Headers)
	}

	fetched := &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	got := RecordContext(context.Background(), fetched)
	sc := trace.SpanContextFromContext(got)
	if !sc.IsRemote() || sc.TraceID() != span.SpanContext().TraceID() || sc.SpanID() != span.SpanContext().SpanID() || !sc.IsSampled() {
		t.Fatalf("extracted %v, want the producer's span %v", sc, span.SpanContext())
	}
	if baggage.FromContext(got).Member("tenant").Value() != "a" {
		t.Fatal("baggage lost on the way")
	}
}

// A record produced again (a dead letter, a retried produce) carries the
// trace context of its new Context, not a second traceparent next to the old.
func TestTraceHeadersReplaceAnEarlierContext(t *testing.T) {
	useGlobalPropagator(t)
	tp := sdktrace.NewTracerProvider()
	first, a := tp.Tracer("t").Start(context.Background(), "first")
	second, b := tp.Tracer("t").Start(context.Background(), "second")
	defer a.End()
	defer b.End()
	r := &kgo.Record{Topic: "t", Context: first}
	traceHeaders{}.OnProduceRecordBuffered(r)
	r.Context = second
	traceHeaders{}.OnProduceRecordBuffered(r)
	n := 0
	for _, h := range r.Headers {
		if h.Key == "traceparent" {
			n++
		}
	}
	if sc := trace.SpanContextFromContext(RecordContext(context.Background(), r)); n != 1 || sc.SpanID() != b.SpanContext().SpanID() {
		t.Fatalf("%d traceparent headers, extracted span %v, want one for %v", n, sc.SpanID(), b.SpanContext().SpanID())
	}
}

// Without a context or a span there is nothing to carry: no headers, and the
// consumer starts a trace of its own.
func TestNoTraceHeadersWithoutASpan(t *testing.T) {
	useGlobalPropagator(t)
	for _, ctx := range []context.Context{nil, context.Background()} {
		r := &kgo.Record{Topic: "t", Context: ctx}
		traceHeaders{}.OnProduceRecordBuffered(r)
		if len(r.Headers) != 0 {
			t.Fatalf("headers %v", r.Headers)
		}
		if trace.SpanContextFromContext(RecordContext(context.Background(), r)).IsValid() {
			t.Fatal("a span context from no headers")
		}
	}
}
