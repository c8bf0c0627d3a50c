// Package envelope defines the versioned JSON payload that carries a chat
// message or answer between services: the value of every Kafka record on
// incoming_messages and responses, and every Redis pub/sub payload.
//
// One shape for all hops keeps the ids, the correlation id and the trace
// context together wherever a message goes.
package envelope

import (
	"errors"
	"fmt"
	"time"

	json "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// Version is the schema version written by this code. Readers accept only
// versions they know, so a future change must bump it.
const Version = 1

// ContentType names the encoding in the Kafka content-type header.
const ContentType = "application/json"

// Types of envelope.
const (
	TypeMessage  = "message"  // a user's message, on incoming_messages
	TypeResponse = "response" // the model's answer, on responses and Redis
	TypeError    = "error"    // a message that could not be answered
	TypeChunk    = "chunk"    // a piece of a streamed answer (never stored)
	TypeStatus   = "status"   // news of an answer on its way, e.g. late (never stored)
)

// States of a status envelope.
const (
	// StateDelayed: the answer is overdue (the model is failing or rate
	// limited) and still coming until the message's answer deadline.
	StateDelayed = "delayed"
)

// Envelope is the payload. ID is the message id for a message and the
// response id for a response or error; ReplyTo points at the message id.
type Envelope struct {
	V             int       `json:"v"`
	Type          string    `json:"type"`
	ID            string    `json:"id"`
	ReplyTo       string    `json:"reply_to,omitempty"`
	UserID        string    `json:"userid"`
	Content       string    `json:"content,omitempty"`
	ClientID      string    `json:"client_id,omitempty"`
	CorrelationID string    `json:"correlation_id"`
	Timestamp     time.Time `json:"timestamp"`
	// AcceptedAt is when the gateway accepted the original message; it rides
	// along so the delivering gateway can observe end-to-end latency.
	AcceptedAt  time.Time `json:"accepted_at,omitzero"`
	TraceParent string    `json:"traceparent,omitempty"`
	TraceState  string    `json:"tracestate,omitempty"`
	// Question is the user's message an answer replies to, carried so the
	// relay appends question and answer to the history together.
	Question string `json:"question,omitempty"`
	// Cursor is the answer's entry id in the user's history stream, set by
	// the relay; clients resume from it.
	Cursor string `json:"cursor,omitempty"`
	// Stream (messages) asks for chunks; Seq numbers a chunk from 1.
	Stream bool `json:"stream,omitzero"`
	Seq    int  `json:"seq,omitzero"`
	// State (status envelopes) says how the answer stands (StateDelayed);
	// Content then holds a short reason for a person.
	State string `json:"state,omitempty"`
	// Model (responses) names the model that answered, when the answer
	// may come from a fallback.
	Model string `json:"model,omitempty"`
}

// ErrInvalid marks an envelope that can never be processed (a poison record).
var ErrInvalid = errors.New("invalid envelope")

// codec is how envelopes are decoded (and their escaped strings encoded,
// encode.go): JSON v2's implementation
// (github.com/go-json-experiment/json), which decodes an answer three to
// four times faster than encoding/json, with encoding/json's semantics
// (DefaultOptionsV1: names matched without case, invalid UTF-8 replaced,
// repeated names allowed, <, >, &, U+2028 and U+2029 escaped, legacy
// omitempty), so services before and after it read each other's records
// (TestCodecMatchesEncodingJSON, and FuzzUnmarshal against encoding/json).
// Benchmarks: docs/performance.md.
var codec = jsonv1.DefaultOptionsV1()

// Unmarshal decodes and validates an envelope. Every failure wraps
// ErrInvalid, so callers can route it to a dead-letter topic.
func Unmarshal(b []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e, codec); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Validate checks the fields every hop relies on.
func (e *Envelope) Validate() error {
	switch {
	case e.V != Version:
		return fmt.Errorf("%w: unsupported version %d", ErrInvalid, e.V)
	case e.Type != TypeMessage && e.Type != TypeResponse && e.Type != TypeError && e.Type != TypeChunk && e.Type != TypeStatus:
		return fmt.Errorf("%w: unknown type %q", ErrInvalid, e.Type)
	case e.ID == "":
		return fmt.Errorf("%w: missing id", ErrInvalid)
	case e.UserID == "":
		return fmt.Errorf("%w: missing userid", ErrInvalid)
	case e.Type != TypeMessage && e.ReplyTo == "":
		return fmt.Errorf("%w: %s without reply_to", ErrInvalid, e.Type)
	case e.Type == TypeStatus && e.State == "":
		return fmt.Errorf("%w: status without state", ErrInvalid)
	}
	return nil
}

// Carrier lets OpenTelemetry propagators read and write the trace context
// held in the envelope (it implements propagation.TextMapCarrier).
type Carrier struct{ E *Envelope }

// Get returns the value for a propagation key.
func (c Carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.E.TraceParent
	case "tracestate":
		return c.E.TraceState
	}
	return ""
}

// Set stores a propagation key; keys other than W3C trace context are dropped.
func (c Carrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.E.TraceParent = value
	case "tracestate":
		c.E.TraceState = value
	}
}

// Keys lists the keys the carrier holds.
func (c Carrier) Keys() []string { return []string{"traceparent", "tracestate"} }
