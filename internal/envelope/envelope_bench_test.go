package envelope

import (
	"strings"
	"testing"
	"time"
)

// benchResponse is an answer as it travels on the responses topic: a 1 KB
// answer to a 64 B question, with the trace context of the ai-consumer.
func benchResponse() *Envelope {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	return &Envelope{
		Type: TypeResponse, ID: "01JD3Q5M2B7C8D9E0F1G2H3J4K", ReplyTo: "01JD3Q5K8W6ZB9X4T2M7N1R0PB",
		UserID: "user-42", Content: strings.Repeat("The relay keeps one user's answers in order. ", 23)[:1024],
		ClientID: "c-1732000000000-17", CorrelationID: "01JD3Q5K8W6ZB9X4T2M7N1R0PA",
		Timestamp: ts, AcceptedAt: ts.Add(-1500 * time.Millisecond),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Question:    strings.Repeat("How are answers ordered? ", 3)[:64],
	}
}

func BenchmarkMarshal(b *testing.B) {
	e := benchResponse()
	want, err := Marshal(e)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(want)))
		for b.Loop() {
			out, err := Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			if len(out) != len(want) {
				b.Fatalf("marshalled %d bytes, want %d", len(out), len(want))
			}
		}
	})
}

func BenchmarkUnmarshal(b *testing.B) {
	in := benchResponse()
	data, err := Marshal(in)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("response", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			e, err := Unmarshal(data)
			if err != nil {
				b.Fatal(err)
			}
			if e.TraceParent != in.TraceParent || len(e.Content) != len(in.Content) {
				b.Fatalf("decoded %+v", e)
			}
		}
	})
	b.Run("invalid", func(b *testing.B) {
		bad := []byte(`{"v":1,"type":"response","id":"r1","userid":"user-42"}`) // no reply_to
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Unmarshal(bad); err == nil {
				b.Fatal("accepted a response without reply_to")
			}
		}
	})
}
