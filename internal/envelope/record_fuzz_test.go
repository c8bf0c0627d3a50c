package envelope_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/kafka"
)

// FuzzRecordEnvelope fuzzes what a consumer does with a Kafka record: read
// the contract headers, decode the value, extract the trace context from the
// envelope, and build the outgoing record from the envelope. The seed corpus
// is in testdata/fuzz/FuzzRecordEnvelope.
//
// Nothing may panic; a bad value is ErrInvalid (→ DLQ); a good one becomes a
// record keyed by its userid, with headers that agree with the envelope,
// whose value decodes to the same envelope; an extracted trace context is
// either invalid (ignored) or survives re-injection.
func FuzzRecordEnvelope(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"message","id":"m1","userid":"u1","correlation_id":"c1","timestamp":"2026-01-02T03:04:05Z","traceparent":"00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"}`),
		[]byte("u1"), "c1", "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01", "")
	f.Fuzz(func(t *testing.T, value, key []byte, corr, traceparent, tracestate string) {
		in := &kgo.Record{Topic: kafka.TopicIncoming, Key: key, Value: value, Headers: []kgo.RecordHeader{
			{Key: kafka.HeaderCorrelationID, Value: []byte(corr)},
			{Key: "traceparent", Value: []byte(traceparent)},
			{Key: "tracestate", Value: []byte(tracestate)},
		}}
		if got := kafka.Header(in, kafka.HeaderCorrelationID); got != corr {
			t.Fatalf("Header = %q, want %q", got, corr)
		}
		e, err := envelope.Unmarshal(in.Value)
		if err != nil {
			if !errors.Is(err, envelope.ErrInvalid) {
				t.Fatalf("undecodable value is not ErrInvalid: %v", err)
			}
			return
		}

		prop := propagation.TraceContext{}
		ctx := prop.Extract(context.Background(), envelope.Carrier{E: e})
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			var out envelope.Envelope
			prop.Inject(ctx, envelope.Carrier{E: &out})
			back := trace.SpanContextFromContext(prop.Extract(context.Background(), envelope.Carrier{E: &out}))
			if back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() {
				t.Fatalf("trace context %q did not survive re-injection: %q", e.TraceParent, out.TraceParent)
			}
		}

		rec, err := kafka.EnvelopeRecord(kafka.TopicResponses, e)
		if err != nil {
			t.Fatalf("a decoded envelope cannot become a record: %v", err)
		}
		if string(rec.Key) != e.UserID {
			t.Fatalf("record key %q, userid %q", rec.Key, e.UserID)
		}
		msgID := e.ID
		if e.ReplyTo != "" {
			msgID = e.ReplyTo
		}
		for k, want := range map[string]string{
			kafka.HeaderCorrelationID: e.CorrelationID,
			kafka.HeaderMessageID:     msgID,
			kafka.HeaderContentType:   envelope.ContentType,
			kafka.HeaderSchemaVersion: strconv.Itoa(envelope.Version),
		} {
			if got := kafka.Header(rec, k); got != want {
				t.Fatalf("header %s = %q, want %q", k, got, want)
			}
		}
		again, err := envelope.Unmarshal(rec.Value)
		if err != nil {
			t.Fatalf("produced value %s refused: %v", rec.Value, err)
		}
		a, b := *e, *again
		if !a.Timestamp.Equal(b.Timestamp) || !a.AcceptedAt.Equal(b.AcceptedAt) {
			t.Fatalf("record value changed the times:\n%+v\n%+v", e, again)
		}
		a.Timestamp, a.AcceptedAt = b.Timestamp, b.AcceptedAt
		if a != b {
			t.Fatalf("record value changed the envelope:\n%+v\n%+v", e, again)
		}
	})
}
