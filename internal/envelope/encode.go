package envelope

import (
	"fmt"
	"strconv"
	"time"

	json "github.com/go-json-experiment/json"
)

// Marshal encodes e, stamping the schema version.
//
// The encoder is written out field by field rather than left to the codec's
// reflection: each answer is encoded three to four times on its way (the
// ai-consumer's stored copy and record, the relay's history entries and
// published copy), and at 3,000 msg/s encoding was a quarter of the relay's
// CPU (docs/performance.md). The bytes are the ones encoding/json writes —
// the fields in struct order, omitempty and omitzero as tagged, strings
// escaped as it escapes them — which TestCodecMatchesEncodingJSON and
// FuzzMarshal hold it to; a field added to Envelope must be added here
// (TestMarshalWritesEveryField fails until it is).
func Marshal(e *Envelope) ([]byte, error) {
	e.V = Version
	b := make([]byte, 0, encodedSize(e))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	var err error
	b = appendField(b, `,"type":`, e.Type, false, &err)
	b = appendField(b, `,"id":`, e.ID, false, &err)
	b = appendField(b, `,"reply_to":`, e.ReplyTo, true, &err)
	b = appendField(b, `,"userid":`, e.UserID, false, &err)
	b = appendField(b, `,"content":`, e.Content, true, &err)
	b = appendField(b, `,"client_id":`, e.ClientID, true, &err)
	b = appendField(b, `,"correlation_id":`, e.CorrelationID, false, &err)
	b = appendTime(b, `,"timestamp":`, e.Timestamp, &err)
	if !e.AcceptedAt.IsZero() {
		b = appendTime(b, `,"accepted_at":`, e.AcceptedAt, &err)
	}
	b = appendField(b, `,"traceparent":`, e.TraceParent, true, &err)
	b = appendField(b, `,"tracestate":`, e.TraceState, true, &err)
	b = appendField(b, `,"question":`, e.Question, true, &err)
	b = appendField(b, `,"cursor":`, e.Cursor, true, &err)
	if e.Stream {
		b = append(b, `,"stream":true`...)
	}
	if e.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, int64(e.Seq), 10)
	}
	b = appendField(b, `,"state":`, e.State, true, &err)
	b = appendField(b, `,"model":`, e.Model, true, &err)
	if err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	return append(b, '}'), nil
}

// appendField appends name and s quoted; nothing when omitEmpty and s is "".
func appendField(b []byte, name, s string, omitEmpty bool, errp *error) []byte {
	if omitEmpty && s == "" {
		return b
	}
	b = append(b, name...)
	if plain(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	// Anything to escape is escaped by the codec, exactly as before.
	q, err := json.Marshal(s, codec)
	if err != nil && *errp == nil {
		*errp = err
	}
	return append(b, q...)
}

// plain reports whether s is printable ASCII with nothing encoding/json
// escapes (", \, and <, > and & for HTML): the ids, cursors and most text.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// encodedSize is room for e's encoding when nothing needs escaping: the
// names, two timestamps and the numbers take under 300 bytes.
func encodedSize(e *Envelope) int {
	return 300 + len(e.Type) + len(e.ID) + len(e.ReplyTo) + len(e.UserID) + len(e.Content) + len(e.ClientID) +
		len(e.CorrelationID) + len(e.TraceParent) + len(e.TraceState) + len(e.Question) + len(e.Cursor) + len(e.State) + len(e.Model)
}

// appendTime appends name and t as encoding/json does (RFC 3339 with
// nanoseconds; a year outside 0–9999 is an error).
func appendTime(b []byte, name string, t time.Time, errp *error) []byte {
	b = append(b, name...)
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil && *errp == nil {
		*errp = err
	}
	return append(b, '"')
}
