package envelope

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestRoundTrip(t *testing.T) {
	in := &Envelope{Type: TypeResponse, ID: "r1", ReplyTo: "m1", UserID: "u1", Content: "hi", CorrelationID: "c1", Timestamp: time.Now().UTC().Truncate(time.Millisecond)}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if *out != *in || out.V != Version {
		t.Fatalf("round trip changed the envelope:\n%+v\n%+v", in, out)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	tests := map[string]string{
		"not json":         `nope`,
		"wrong version":    `{"v":2,"type":"message","id":"m","userid":"u"}`,
		"unknown type":     `{"v":1,"type":"shout","id":"m","userid":"u"}`,
		"missing id":       `{"v":1,"type":"message","userid":"u"}`,
		"missing userid":   `{"v":1,"type":"message","id":"m"}`,
		"response no ref":  `{"v":1,"type":"response","id":"r","userid":"u"}`,
		"wrong field type": `{"v":1,"type":"message","id":5,"userid":"u"}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Unmarshal([]byte(in)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("want ErrInvalid, got %v", err)
			}
		})
	}
}

func TestCarrierPropagatesTraceContext(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("0102030405060708090a0b0c0d0e0f10")
	sid, _ := trace.SpanIDFromHex("0102030405060708")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	var e Envelope
	prop := propagation.TraceContext{}
	prop.Inject(ctx, Carrier{&e})
	if e.TraceParent == "" {
		t.Fatal("traceparent not injected")
	}
	got := trace.SpanContextFromContext(prop.Extract(context.Background(), Carrier{&e}))
	if got.TraceID() != tid || got.SpanID() != sid {
		t.Fatalf("extracted %v", got)
	}
}
