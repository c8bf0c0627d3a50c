package envelope

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzUnmarshal feeds arbitrary payloads (Kafka record values, Redis
// messages) to Unmarshal. The seed corpus is in testdata/fuzz/FuzzUnmarshal
// and runs with go test.
//
// A refusal must wrap ErrInvalid (the DLQ routing depends on it); an
// accepted envelope must validate, and Marshal → Unmarshal must give it back
// unchanged, with a stable encoding.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"v":1,"type":"message","id":"m1","userid":"u1","correlation_id":"c1","timestamp":"2026-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		sameAsEncodingJSON(t, b, e, err)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if e != nil {
				t.Fatal("an error came with an envelope")
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("accepted an envelope that does not validate: %v", err)
		}
		if e.V != Version {
			t.Fatalf("accepted version %d", e.V)
		}
		first := *e
		enc, err := Marshal(&first)
		if err != nil {
			t.Fatalf("accepted envelope cannot be marshalled: %v (%+v)", err, e)
		}
		sameEncodingAsEncodingJSON(t, &first, enc)
		back, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("re-encoded envelope %s refused: %v", enc, err)
		}
		if !sameEnvelope(e, back) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", e, back)
		}
		enc2, err := Marshal(back)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

// sameEncodingAsEncodingJSON checks Marshal's bytes (encode.go) against
// encoding/json's for e: the same but for the replacement character of
// invalid UTF-8, which encoding/json writes escaped (the same string).
func sameEncodingAsEncodingJSON(t *testing.T, e *Envelope, got []byte) {
	t.Helper()
	want, err := stdjson.Marshal(e)
	if err != nil {
		t.Fatalf("encoding/json refused what Marshal wrote (%s): %v", got, err)
	}
	if string(got) != strings.ReplaceAll(string(want), `\ufffd`, "\ufffd") {
		t.Fatalf("Marshal and encoding/json differ:\n got %s\nwant %s", got, want)
	}
}

// sameAsEncodingJSON checks the codec against encoding/json on b: both
// refuse it, or both accept the same envelope (see codec).
func sameAsEncodingJSON(t *testing.T, b []byte, got *Envelope, gotErr error) {
	t.Helper()
	var want Envelope
	wantErr := stdjson.Unmarshal(b, &want)
	if wantErr == nil {
		wantErr = want.Validate()
	}
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("%q: error %v, encoding/json's %v", b, gotErr, wantErr)
	case gotErr == nil && !sameEnvelope(got, &want):
		t.Fatalf("%q:\n got %+v\nwant %+v", b, got, &want)
	}
}

// sameEnvelope compares field by field, times as instants.
func sameEnvelope(a, b *Envelope) bool {
	ta, tb := *a, *b
	if !ta.Timestamp.Equal(tb.Timestamp) || !ta.AcceptedAt.Equal(tb.AcceptedAt) {
		return false
	}
	ta.Timestamp, ta.AcceptedAt = tb.Timestamp, tb.AcceptedAt
	return ta == tb
}
