package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// benchContent returns chat-like text of exactly n bytes: words, punctuation
// and a few non-ASCII letters, as a client would type it.
func benchContent(n int) string {
	const text = "Could you explain how the relay keeps answers in order? Grüße, und danke schön! "
	s := strings.Repeat(text, n/len(text)+1)[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1] // never cut a multi-byte letter in half
	}
	return s + strings.Repeat(".", n-len(s))
}

func messageFrame(b *testing.B, content string) []byte {
	b.Helper()
	data, err := json.Marshal(map[string]string{
		"type": TypeMessage, "content": content, "userid": "user-42",
		"id": "c-1732000000000-17", "correlation_id": "01JD3Q5K8W6ZB9X4T2M7N1R0PA",
	})
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkDecodeClientFrame(b *testing.B) {
	lim := Limits{MaxContentBytes: 4096}
	for _, size := range []int{64, 1024} {
		content := benchContent(size)
		if len(content) != size {
			b.Fatalf("content is %d bytes, want %d", len(content), size)
		}
		data := messageFrame(b, content)
		name := map[int]string{64: "message_64B", 1024: "message_1KB"}[size]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				f, err := DecodeClientFrame(data, "user-42", lim)
				if err != nil {
					b.Fatal(err)
				}
				if len(f.Content) != size {
					b.Fatalf("decoded %d bytes of content", len(f.Content))
				}
			}
		})
	}
	// The same frame with an escaped newline and quotes, as multi-line
	// messages arrive.
	escaped := messageFrame(b, "first line\nsecond \"quoted\" line\ttabbed, and a backslash \\ too")
	b.Run("message_escaped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeClientFrame(escaped, "user-42", lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	invalid := []struct {
		name   string
		data   []byte
		reason Reason
	}{
		// Valid JSON, refused by validation: another user's id.
		{"invalid_userid", messageFrame(b, benchContent(64)), ReasonUserMismatch},
		// Refused by the strict decoder: a field that does not exist.
		{"invalid_unknown_field", []byte(`{"type":"message","content":"hi","userid":"user-42","admin":true}`), ReasonBadJSON},
	}
	for _, tc := range invalid {
		userID := "user-42"
		if tc.reason == ReasonUserMismatch {
			userID = "user-43"
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, err := DecodeClientFrame(tc.data, userID, lim)
				var pe *Error
				if !errors.As(err, &pe) || pe.Reason != tc.reason {
					b.Fatalf("want a %s refusal, got %v", tc.reason, err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	ts := FormatTime(time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC))
	frames := []struct {
		name string
		f    ServerFrame
	}{
		{"response_64B", ServerFrame{
			Type: TypeResponse, ID: "01JD3Q5M2B7C8D9E0F1G2H3J4K", Content: benchContent(64), UserID: "user-42",
			Timestamp: ts, ReplyTo: "01JD3Q5K8W6ZB9X4T2M7N1R0PB", ClientID: "c-1732000000000-17",
			CorrelationID: "01JD3Q5K8W6ZB9X4T2M7N1R0PA", Cursor: "1732000000123-0",
		}},
		{"response_1KB", ServerFrame{
			Type: TypeResponse, ID: "01JD3Q5M2B7C8D9E0F1G2H3J4K", Content: benchContent(1024), UserID: "user-42",
			Timestamp: ts, ReplyTo: "01JD3Q5K8W6ZB9X4T2M7N1R0PB", ClientID: "c-1732000000000-17",
			CorrelationID: "01JD3Q5K8W6ZB9X4T2M7N1R0PA", Cursor: "1732000000123-0",
		}},
		{"ack", ServerFrame{
			Type: TypeAck, ID: "01JD3Q5K8W6ZB9X4T2M7N1R0PB", ClientID: "c-1732000000000-17",
			CorrelationID: "01JD3Q5K8W6ZB9X4T2M7N1R0PA", UserID: "user-42", Timestamp: ts,
		}},
	}
	for _, tc := range frames {
		want, err := json.Marshal(tc.f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got := Encode(tc.f); len(got) != len(want) {
					b.Fatalf("encoded %d bytes, want %d", len(got), len(want))
				}
			}
			if got := Encode(tc.f); !bytes.Equal(got, want) {
				b.Fatalf("encoded\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func BenchmarkFormatTime(b *testing.B) {
	t := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.FixedZone("x", 3600))
	const want = "2026-01-02T02:04:05.006Z"
	b.ReportAllocs()
	for b.Loop() {
		if got := FormatTime(t); got != want {
			b.Fatalf("FormatTime = %q, want %q", got, want)
		}
	}
}
