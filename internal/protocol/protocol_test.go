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
