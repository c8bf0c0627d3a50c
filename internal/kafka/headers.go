package kafka

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
)

// Record headers of the message contract (DESIGN.md). traceparent and
// tracestate are written by kotel.
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
	return &kgo.Record{
		Topic: topic,
		Key:   []byte(e.UserID),
		Value: b,
		Headers: []kgo.RecordHeader{
			{Key: HeaderCorrelationID, Value: []byte(e.CorrelationID)},
			{Key: HeaderMessageID, Value: []byte(msgID)},
			{Key: HeaderContentType, Value: []byte(envelope.ContentType)},
			{Key: HeaderSchemaVersion, Value: []byte(strconv.Itoa(envelope.Version))},
		},
	}, nil
}
