package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeClientFrame(t *testing.T) {
	lim := Limits{MaxContentBytes: 16}
	tests := []struct {
		name   string
		in     string
		reason Reason
	}{
		{"ok", `{"type":"message","content":"hi","userid":"u1"}`, ""},
		{"ok with ids", `{"type":"message","content":"hi","userid":"u1","id":"c-1","correlation_id":"x"}`, ""},
		{"ok multiline", `{"type":"message","content":"a\nb\tc","userid":"u1"}`, ""},
		{"bad json", `{"type":`, ReasonBadJSON},
		{"empty", ``, ReasonBadJSON},
		{"not an object", `[1,2]`, ReasonBadJSON},
		{"trailing", `{"type":"message","content":"hi","userid":"u1"} {}`, ReasonBadJSON},
		{"unknown field", `{"type":"message","content":"hi","userid":"u1","admin":true}`, ReasonBadJSON},
		{"wrong type of field", `{"type":"message","content":5,"userid":"u1"}`, ReasonBadJSON},
		{"unknown type", `{"type":"shout","content":"hi","userid":"u1"}`, ReasonUnknownType},
		{"missing type", `{"content":"hi","userid":"u1"}`, ReasonUnknownType},
		{"empty content", `{"type":"message","content":"  ","userid":"u1"}`, ReasonEmptyContent},
		{"spoofed userid", `{"type":"message","content":"hi","userid":"u2"}`, ReasonUserMismatch},
		{"too long", `{"type":"message","content":"12345678901234567","userid":"u1"}`, ReasonContentTooLong},
		{"control char", `{"type":"message","content":"a\u0007b","userid":"u1"}`, ReasonInvalidText},
		{"invalid utf8", "{\"type\":\"message\",\"content\":\"\xff\",\"userid\":\"u1\"}", ReasonInvalidText},
		{"bad client id", `{"type":"message","content":"hi","userid":"u1","id":"a b"}`, ReasonBadID},
		{"resume", `{"type":"resume","cursor":"1732000000000-0","userid":"u1"}`, ""},
		{"resume bad cursor", `{"type":"resume","cursor":"abc","userid":"u1"}`, ReasonBadCursor},
		{"resume no cursor", `{"type":"resume","userid":"u1"}`, ReasonBadCursor},
		{"resume spoofed", `{"type":"resume","cursor":"1-0","userid":"u2"}`, ReasonUserMismatch},
		{"cursor on a message", `{"type":"message","content":"hi","cursor":"1-0","userid":"u1"}`, ReasonBadJSON},
		{"content on a resume", `{"type":"resume","cursor":"1-0","userid":"u1","content":"x"}`, ReasonBadJSON},
		{"bad id on a resume", `{"type":"resume","cursor":"1-0","userid":"u1","id":"a b"}`, ReasonBadID},
		{"key in another case", `{"TYPE":"message","content":"hi","userid":"u1"}`, ReasonBadJSON},
		{"userid in another case", `{"type":"message","content":"hi","userid":"u1","UserID":"u2"}`, ReasonBadJSON},
		{"duplicate key", `{"type":"message","content":"hi","userid":"u1","content":"again"}`, ReasonBadJSON},
		{"duplicate userid", `{"type":"message","content":"hi","userid":"u2","userid":"u1"}`, ReasonBadJSON},
		{"null value", `{"type":"message","content":"hi","userid":"u1","id":null}`, ReasonBadJSON},
		{"bool value", `{"type":"message","content":true,"userid":"u1"}`, ReasonBadJSON},
		{"nested object", `{"type":"message","content":{"a":"b"},"userid":"u1"}`, ReasonBadJSON},
		{"nested array", `{"type":"message","content":["hi"],"userid":"u1"}`, ReasonBadJSON},
		{"deep nesting", `{"type":"message","content":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `,"userid":"u1"}`, ReasonBadJSON},
		{"deep nesting at top", strings.Repeat("[", 100000), ReasonBadJSON},
		{"top-level string", `"message"`, ReasonBadJSON},
		{"trailing garbage", `{"type":"message","content":"hi","userid":"u1"}x`, ReasonBadJSON},
		{"trailing whitespace ok", "{\"type\":\"message\",\"content\":\"hi\",\"userid\":\"u1\"}\n ", ""},
		{"escaped control char", `{"type":"message","content":"a\u001bb","userid":"u1"}`, ReasonInvalidText},
		{"lone surrogate", `{"type":"message","content":"a\ud800b","userid":"u1"}`, ReasonInvalidText},
		{"DEL", `{"type":"message","content":"a\u007fb","userid":"u1"}`, ReasonInvalidText},
		{"C1 control", `{"type":"message","content":"a\u0085b","userid":"u1"}`, ReasonInvalidText},
		{"escaped unicode ok", `{"type":"message","content":"gr\u00fc\u00dfe \ud83d\ude00","userid":"u1"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeClientFrame([]byte(tc.in), "u1", lim)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if (f.Type != TypeMessage && f.Type != TypeResume) || f.UserID != "u1" {
					t.Fatalf("bad frame %+v", f)
				}
				return
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("want *Error, got %v", err)
			}
			if pe.Reason != tc.reason {
				t.Fatalf("reason %q, want %q (%s)", pe.Reason, tc.reason, pe.Message)
			}
			if strings.Contains(pe.Message, "12345678901234567") {
				t.Fatal("error echoes client content")
			}
		})
	}
}

func TestEncodeResponse(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.FixedZone("x", 3600))
	b := Encode(ServerFrame{Type: TypeResponse, Content: "<b>hi</b>", UserID: "u1", Timestamp: FormatTime(now), ReplyTo: "m1", CorrelationID: "c1", ID: "r1"})
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"type": "response", "content": "<b>hi</b>", "userid": "u1", "reply_to": "m1", "correlation_id": "c1", "id": "r1"} {
		if m[k] != want {
			t.Errorf("%s = %q, want %q", k, m[k], want)
		}
	}
	ts, err := time.Parse(time.RFC3339, m["timestamp"])
	if err != nil || !ts.Equal(now) {
		t.Fatalf("timestamp %q not RFC 3339 of %v: %v", m["timestamp"], now, err)
	}
	if _, ok := m["message"]; ok {
		t.Fatal("empty fields must be omitted")
	}
}

func TestErrorFrame(t *testing.T) {
	var m map[string]string
	_ = json.Unmarshal(Encode(ErrorFrame("u1", "nope")), &m)
	if m["type"] != "error" || m["message"] != "nope" || m["userid"] != "u1" {
		t.Fatalf("bad error frame: %v", m)
	}
}

func TestRejectedFrameIDIsSafeToEcho(t *testing.T) {
	for _, in := range []string{
		`{"type":"message","content":" ","userid":"u1","id":"<script>"}`,
		`{"type":"message","content":"hi","userid":"u2","id":"` + strings.Repeat("x", 100) + `"}`,
	} {
		f, err := DecodeClientFrame([]byte(in), "u1", Limits{MaxContentBytes: 100})
		if err == nil || f.ID != "" {
			t.Fatalf("%s: id %q echoed with %v", in, f.ID, err)
		}
	}
	f, err := DecodeClientFrame([]byte(`{"type":"message","content":" ","userid":"u1","id":"c-1"}`), "u1", Limits{})
	if err == nil || f.ID != "c-1" {
		t.Fatalf("a valid id must be kept for the error frame: %q %v", f.ID, err)
	}
}
