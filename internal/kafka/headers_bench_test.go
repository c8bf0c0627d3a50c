package kafka

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/telemetry"
)

// benchResponse is an answer as the ai-consumer produces it: 1 KB of text,
// the question, and the trace context.
func benchResponse() *envelope.Envelope {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	return &envelope.Envelope{
		Type: envelope.TypeResponse, ID: "01JD3Q5M2B7C8D9E0F1G2H3J4K", ReplyTo: "01JD3Q5K8W6ZB9X4T2M7N1R0PB",
		UserID: "user-42", Content: strings.Repeat("The relay keeps one user's answers in order. ", 23)[:1024],
		ClientID: "c-1732000000000-17", CorrelationID: "01JD3Q5K8W6ZB9X4T2M7N1R0PA",
		Timestamp: ts, AcceptedAt: ts.Add(-1500 * time.Millisecond),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Question:    strings.Repeat("How are answers ordered? ", 3)[:64],
	}
}

// BenchmarkEnvelopeRecord is the producing side: envelope → Kafka record.
// "traced" adds what the produce hook then does to it: inject the trace
// context as headers.
func BenchmarkEnvelopeRecord(b *testing.B) {
	e := benchResponse()
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := EnvelopeRecord(TopicResponses, e)
			if err != nil {
				b.Fatal(err)
			}
			if len(r.Headers) != 4 || string(r.Key) != e.UserID {
				b.Fatalf("bad record %+v", r)
			}
		}
	})
	b.Run("response_traced", func(b *testing.B) {
		useGlobalPropagator(b)
		tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
		sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
		ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
		}))
		ctx = telemetry.WithCorrelationID(ctx, e.CorrelationID)
		b.ReportAllocs()
		for b.Loop() {
			r, err := EnvelopeRecord(TopicResponses, e)
			if err != nil {
				b.Fatal(err)
			}
			r.Context = ctx
			traceHeaders{}.OnProduceRecordBuffered(r)
			if len(r.Headers) != 5 || Header(r, "traceparent") == "" {
				b.Fatalf("bad record headers %+v", r.Headers)
			}
		}
	})
}

// BenchmarkRecordEnvelope is the consuming side, as the relay and the
// ai-consumer do it: the contract headers, then the value decoded back into
// an envelope.
func BenchmarkRecordEnvelope(b *testing.B) {
	e := benchResponse()
	r, err := EnvelopeRecord(TopicResponses, e)
	if err != nil {
		b.Fatal(err)
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: "traceparent", Value: []byte(e.TraceParent)})
	b.ReportAllocs()
	for b.Loop() {
		if Header(r, HeaderCorrelationID) != e.CorrelationID || Header(r, HeaderMessageID) != e.ReplyTo {
			b.Fatal("contract headers lost")
		}
		got, err := envelope.Unmarshal(r.Value)
		if err != nil {
			b.Fatal(err)
		}
		if got.ID != e.ID || got.TraceParent != e.TraceParent {
			b.Fatalf("decoded %+v", got)
		}
	}
}
