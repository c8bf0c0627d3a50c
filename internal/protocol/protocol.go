// Package protocol defines the WebSocket frames exchanged with chat clients:
// decoding and validating what a client sends, encoding what the server sends.
//
// Client → server:
//
//	{"type":"message","content":"…","userid":"u1","id":"c-1","correlation_id":"…"}
//
// Server → client: "ready" (the connection's starting cursor), "ack" (the
// message is durably queued), "response" (the answer), "chunk" (a piece of
// an answer being written) and "error" frames. All server frames carry
// "type" and "userid".
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/ids"
)

// Frame types.
const (
	TypeMessage  = "message"
	TypeResume   = "resume"
	TypeAck      = "ack"
	TypeResponse = "response"
	TypeError    = "error"
	TypeChunk    = "chunk"
	// TypeReady is the first frame on a connection: its cursor is where the
	// connection starts in the user's history (the client's resume cursor,
	// or, without one, after what was last delivered to the user). A client
	// that keeps it, and then each answer's cursor, can always resume.
	TypeReady = "ready"
	// TypeStatus says how an answer on its way stands: state "delayed"
	// with a short reason in message, for the message in reply_to; the
	// answer follows (or, at its deadline, one error frame).
	TypeStatus = "status"
)

// TimeFormat is RFC 3339 with milliseconds, always in UTC.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// FormatTime renders t as a frame timestamp.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// ClientFrame is what a client sends.
type ClientFrame struct {
	Type          string `json:"type"`
	Content       string `json:"content"`
	UserID        string `json:"userid"`
	ID            string `json:"id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Cursor (resume frames) is the cursor of the last answer the client saw.
	Cursor string `json:"cursor,omitempty"`
	// Stream (message frames) asks for the answer as it is written: chunk
	// frames, then the final response.
	Stream bool `json:"stream,omitempty"`
}

// ServerFrame is what the server sends; unused fields are omitted.
type ServerFrame struct {
	Type          string `json:"type"`
	ID            string `json:"id,omitempty"`
	Content       string `json:"content,omitempty"`
	Message       string `json:"message,omitempty"`
	UserID        string `json:"userid"`
	Timestamp     string `json:"timestamp,omitempty"`
	ReplyTo       string `json:"reply_to,omitempty"`
	ClientID      string `json:"client_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Cursor is the answer's position in the user's history: reconnect with
	// it (resume) to get everything after it.
	Cursor string `json:"cursor,omitempty"`
	// Seq and Delta are a chunk frame's place in the answer and its text.
	Seq   int    `json:"seq,omitempty"`
	Delta string `json:"delta,omitempty"`
	// State (status frames) is how the answer stands ("delayed").
	State string `json:"state,omitempty"`
	// Model (responses) names the model that answered.
	Model string `json:"model,omitempty"`
}

// Reason is a bounded label for why a frame was rejected (used in metrics).
type Reason string

// Rejection reasons.
const (
	ReasonBadJSON        Reason = "bad_json"
	ReasonUnknownType    Reason = "unknown_type"
	ReasonEmptyContent   Reason = "empty_content"
	ReasonContentTooLong Reason = "content_too_long"
	ReasonUserMismatch   Reason = "userid_mismatch"
	ReasonInvalidText    Reason = "invalid_text"
	ReasonBadID          Reason = "bad_id"
	ReasonBadCursor      Reason = "bad_cursor"
)

// Error is a rejected client frame: Message is safe to send to the client.
type Error struct {
	Reason  Reason
	Message string
}

func (e *Error) Error() string { return string(e.Reason) + ": " + e.Message }

func reject(r Reason, format string, args ...any) *Error {
	if len(args) == 0 && !strings.Contains(format, "%") {
		// Most refusals are a fixed sentence: no need for fmt.
		return &Error{Reason: r, Message: format}
	}
	return &Error{Reason: r, Message: fmt.Sprintf(format, args...)}
}

// Limits bound what a client may send.
type Limits struct {
	// MaxContentBytes bounds the content of one message.
	MaxContentBytes int
}

// DecodeClientFrame parses and validates one client frame for the connection
// of userID. Every failure is an *Error whose Message can go to the client.
// On a failure the returned frame's ID is either empty or a valid id, so it
// can be echoed as client_id.
func DecodeClientFrame(data []byte, userID string, lim Limits) (ClientFrame, error) {
	f, err := decodeClientFrame(data, userID, lim)
	if err != nil && f.ID != "" && !ids.ValidCorrelationID(f.ID) {
		f.ID = ""
	}
	return f, err
}

func decodeClientFrame(data []byte, userID string, lim Limits) (ClientFrame, error) {
	var f ClientFrame
	if !utf8.Valid(data) {
		return f, reject(ReasonInvalidText, "frame is not valid UTF-8")
	}
	if err := decodeStrict(data, &f); err != nil {
		return ClientFrame{}, err
	}
	switch f.Type {
	case TypeMessage:
	case TypeResume:
		if f.UserID != userID {
			return f, reject(ReasonUserMismatch, "userid does not match the connection")
		}
		if !cursor.Valid(f.Cursor) {
			return f, reject(ReasonBadCursor, "cursor must be the cursor of an answer (digits-digits)")
		}
		if f.Content != "" {
			return f, reject(ReasonBadJSON, "content belongs in a message frame")
		}
		if f.ID != "" && !ids.ValidCorrelationID(f.ID) {
			return f, reject(ReasonBadID, "id must be 1-64 characters of [A-Za-z0-9._:-]")
		}
		return f, nil
	case "":
		return f, reject(ReasonUnknownType, "missing frame type")
	default:
		return f, reject(ReasonUnknownType, "unknown frame type %q", truncate(f.Type, 32))
	}
	if f.UserID != userID {
		return f, reject(ReasonUserMismatch, "userid does not match the connection")
	}
	if f.Cursor != "" {
		return f, reject(ReasonBadJSON, "cursor belongs in a resume frame")
	}
	// strings.TrimSpace trims exactly what bytes.TrimSpace does, without
	// copying the content to a []byte first.
	if strings.TrimSpace(f.Content) == "" {
		return f, reject(ReasonEmptyContent, "content is empty")
	}
	if lim.MaxContentBytes > 0 && len(f.Content) > lim.MaxContentBytes {
		return f, reject(ReasonContentTooLong, "content is longer than %d bytes", lim.MaxContentBytes)
	}
	if !cleanText(f.Content) {
		return f, reject(ReasonInvalidText, "content holds control characters")
	}
	if f.ID != "" && !ids.ValidCorrelationID(f.ID) {
		return f, reject(ReasonBadID, "id must be 1-64 characters of [A-Za-z0-9._:-]")
	}
	return f, nil
}

// jsonProblem describes a decode error without echoing client data back.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be a %s", te.Field, te.Type)
	case errors.Is(err, io.EOF):
		return "empty frame"
	default:
		msg := err.Error()
		if len(msg) > 80 {
			msg = msg[:80]
		}
		return msg
	}
}

// cleanText allows printable characters and whitespace, nothing else: control
// characters have no place in a chat message and confuse terminals and logs.
func cleanText(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError {
			return false
		}
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Encode marshals a server frame. Server frames hold only strings, so
// marshalling cannot fail.
func Encode(f ServerFrame) []byte {
	// json.Marshal(f) would copy f to the heap to put it in an interface;
	// a pooled *ServerFrame encodes the same bytes without that copy.
	p := framePool.Get().(*ServerFrame)
	*p = f
	b, _ := json.Marshal(p)
	*p = ServerFrame{} // hold no strings while pooled
	framePool.Put(p)
	return b
}

var framePool = sync.Pool{New: func() any { return new(ServerFrame) }}

// ErrorFrame builds an error frame for userID.
func ErrorFrame(userID, message string) ServerFrame {
	return ServerFrame{Type: TypeError, Message: message, UserID: userID, Timestamp: FormatTime(time.Now())}
}
