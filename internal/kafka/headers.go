package kafka

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
)

// Record headers of the message contract (DESIGN.md). traceparent,
// tracestate and baggage are written by the produce hook (tracectx.go).
const (
	HeaderCorrelationID = "correlation_id"
	HeaderMessageID     = "message_id"
	HeaderContentType   = "content-type"
	HeaderSchemaVersion = "schema-version"

	HeaderDLQReason    = "dlq-reason"
	HeaderDLQTopic     = "dlq-source-topic"
	HeaderDLQPartition = "dlq-source-partition"
	HeaderDLQOffset    = "dlq-source-offset"
	HeaderDLQAttempts  = "dlq-attempts"
	HeaderDLQTime      = "dlq-time"
)

// Header returns the first value of header key, or "".
func Header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// SetHeader replaces (or adds) header key.
func SetHeader(r *kgo.Record, key, value string) {
	for i := range r.Headers {
		if r.Headers[i].Key == key {
			r.Headers[i].Value = []byte(value)
			return
		}
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

// EnvelopeRecord builds the record carrying e on topic: keyed by userid so
// one user's traffic stays in one partition, with the contract's headers.
func EnvelopeRecord(topic string, e *envelope.Envelope) (*kgo.Record, error) {
	b, err := envelope.Marshal(e)
	if err != nil {
		return nil, err
	}
	msgID := e.ID
	if e.ReplyTo != "" {
		msgID = e.ReplyTo
	}
	// The key and the two per-message header values share one allocation.
	// Each is capped at its own length, so an append to one copies instead
	// of writing over the next.
	buf := make([]byte, 0, len(e.UserID)+len(e.CorrelationID)+len(msgID))
	buf = append(buf, e.UserID...)
	buf = append(buf, e.CorrelationID...)
	buf = append(buf, msgID...)
	n1, n2 := len(e.UserID), len(e.UserID)+len(e.CorrelationID)
	// Room for the trace headers the produce hook appends (traceparent,
	// tracestate, baggage), so that does not reallocate the slice.
	headers := make([]kgo.RecordHeader, 4, 4+3)
	headers[0] = kgo.RecordHeader{Key: HeaderCorrelationID, Value: buf[n1:n2:n2]}
	headers[1] = kgo.RecordHeader{Key: HeaderMessageID, Value: buf[n2:]}
	headers[2] = kgo.RecordHeader{Key: HeaderContentType, Value: contentTypeValue}
	headers[3] = kgo.RecordHeader{Key: HeaderSchemaVersion, Value: schemaVersionValue}
	return &kgo.Record{
		Topic:   topic,
		Key:     buf[:n1:n1],
		Value:   b,
		Headers: headers,
	}, nil
}

// The constant header values are shared by every record instead of being
// copied into each: header values are only ever replaced (SetHeader, the trace hook),
// never written in place, and their capacity is their length, so an append
// copies.
var (
	contentTypeValue   = constBytes(envelope.ContentType)
	schemaVersionValue = constBytes(strconv.Itoa(envelope.Version))
)

func constBytes(s string) []byte { b := []byte(s); return b[:len(b):len(b)] }
