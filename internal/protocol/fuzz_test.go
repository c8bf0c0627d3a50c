package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/ids"
)

var knownReasons = map[Reason]bool{
	ReasonBadJSON: true, ReasonUnknownType: true, ReasonEmptyContent: true, ReasonContentTooLong: true,
	ReasonUserMismatch: true, ReasonInvalidText: true, ReasonBadID: true, ReasonBadCursor: true,
}

// FuzzDecodeClientFrame feeds arbitrary frames to the decoder. The seed
// corpus is in testdata/fuzz/FuzzDecodeClientFrame and runs with go test.
//
// Refusals must be *Error with a known reason and a short, valid message;
// accepted frames must satisfy every documented invariant, be what
// encoding/json (exact keys, no unknown fields) would decode too, and
// survive an encode → decode round trip unchanged.
func FuzzDecodeClientFrame(f *testing.F) {
	f.Add([]byte(`{"type":"message","content":"hi","userid":"u1"}`), "u1", 16)
	f.Fuzz(func(t *testing.T, data []byte, userID string, maxContent int) {
		lim := Limits{MaxContentBytes: maxContent}
		fr, err := DecodeClientFrame(data, userID, lim)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error is %T, not *Error: %v", err, err)
			}
			if !knownReasons[pe.Reason] {
				t.Fatalf("unknown reason %q", pe.Reason)
			}
			if pe.Message == "" || len(pe.Message) > 200 || !utf8.ValidString(pe.Message) {
				t.Fatalf("message not fit for the client: %q", pe.Message)
			}
			if fr.ID != "" && !ids.ValidCorrelationID(fr.ID) {
				t.Fatalf("rejected frame carries an id unfit to echo: %q", fr.ID)
			}
			return
		}
		checkAccepted(t, data, userID, lim, fr)

		// Round trip: what we accepted, re-encoded, is accepted as is.
		enc, err := json.Marshal(fr)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeClientFrame(enc, userID, lim)
		if err != nil {
			t.Fatalf("re-encoded frame %s refused: %v", enc, err)
		}
		if again != fr {
			t.Fatalf("round trip changed the frame:\n%+v\n%+v", fr, again)
		}
	})
}

func checkAccepted(t *testing.T, data []byte, userID string, lim Limits, fr ClientFrame) {
	t.Helper()
	if !utf8.Valid(data) {
		t.Fatal("accepted a frame that is not valid UTF-8")
	}
	if fr.UserID != userID {
		t.Fatalf("accepted userid %q on the connection of %q", fr.UserID, userID)
	}
	if fr.ID != "" && !ids.ValidCorrelationID(fr.ID) {
		t.Fatalf("accepted id %q", fr.ID)
	}
	switch fr.Type {
	case TypeMessage:
		if strings.TrimSpace(fr.Content) == "" {
			t.Fatal("accepted empty content")
		}
		if lim.MaxContentBytes > 0 && len(fr.Content) > lim.MaxContentBytes {
			t.Fatalf("accepted %d bytes of content over a limit of %d", len(fr.Content), lim.MaxContentBytes)
		}
		for _, r := range fr.Content {
			if r == utf8.RuneError || (unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t') {
				t.Fatalf("accepted content with %U", r)
			}
		}
		if fr.Cursor != "" {
			t.Fatal("accepted a message with a cursor")
		}
	case TypeResume:
		if !cursor.Valid(fr.Cursor) || fr.Content != "" {
			t.Fatalf("accepted resume %+v", fr)
		}
	default:
		t.Fatalf("accepted type %q", fr.Type)
	}

	// Independent reading: one flat object of exactly spelled, unique,
	// known keys with string values, and nothing else.
	dec := json.NewDecoder(bytes.NewReader(data))
	var depth, maxDepth int
	keys := map[string]bool{}
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
				maxDepth = max(maxDepth, depth)
				expectKey = v == '{'
			} else {
				depth--
			}
			continue
		case string:
			if expectKey && depth == 1 {
				if keys[v] {
					t.Fatalf("accepted duplicate key %q", v)
				}
				if _, ok := clientFields[v]; !ok {
					t.Fatalf("accepted unknown key %q", v)
				}
				keys[v] = true
				expectKey = false
				continue
			}
			expectKey = depth == 1
		default:
			t.Fatalf("accepted a non-string value %v", v)
		}
	}
	if maxDepth != MaxJSONDepth {
		t.Fatalf("accepted nesting depth %d", maxDepth)
	}
	var ref ClientFrame
	rd := json.NewDecoder(bytes.NewReader(data))
	rd.DisallowUnknownFields()
	if err := rd.Decode(&ref); err != nil {
		t.Fatalf("accepted a frame encoding/json refuses: %v", err)
	}
	if ref != fr {
		t.Fatalf("encoding/json reads it differently:\n%+v\n%+v", ref, fr)
	}
}
