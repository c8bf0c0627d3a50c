package envelope

import (
	"context"
	stdjson "encoding/json"
	"errors"
	"reflect"
	"strings"
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

// The envelope codec is JSON v2's, set to behave as encoding/json: the same
// bytes out, and the same envelopes (or a refusal) in, so services of the
// version before it and after it read each other's records.
func TestCodecMatchesEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	outs := []*Envelope{
		{Type: TypeMessage, ID: "m1", UserID: "u", Content: "plain", CorrelationID: "c", Timestamp: ts},
		{Type: TypeResponse, ID: "r1", ReplyTo: "m1", UserID: "u", Content: "<b>&amp;</b> \u2028 \u2029 \x00 \t \"q\" \\ é 🙂 \xff\xfe",
			CorrelationID: "c", Timestamp: ts, AcceptedAt: ts.Add(-time.Second), Question: "why <not>?", Cursor: "1-2", Model: "m"},
		{Type: TypeChunk, ID: "k1", ReplyTo: "m1", UserID: "u", Content: "piece", Seq: 3, Stream: true, Timestamp: ts.In(time.FixedZone("x", 3600))},
		{Type: TypeStatus, ID: "s1", ReplyTo: "m1", UserID: "u", State: StateDelayed, TraceParent: "00-a-b-01", TraceState: "k=v"},
		{},
	}
	for i, e := range outs {
		got, err := Marshal(e)
		if err != nil {
			t.Fatalf("envelope %d: %v", i, err)
		}
		want, err := stdjson.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		// Byte for byte, but for the replacement character of invalid
		// UTF-8, which v1 writes escaped and v2 as itself: the same string.
		if string(got) != strings.ReplaceAll(string(want), `\ufffd`, "\ufffd") {
			t.Errorf("envelope %d:\n got %s\nwant %s", i, got, want)
		}
	}

	ins := []string{
		`{"v":1,"type":"message","id":"m","userid":"u","correlation_id":"c","timestamp":"2026-01-02T03:04:05Z"}`,
		`{"V":1,"TYPE":"message","Id":"m","UserID":"u","timestamp":"2026-01-02T03:04:05.5+01:00"}`,
		`{"v":1,"type":"message","id":"a","id":"b","userid":"u","content":"x\ud800y \xff","unknown":{"a":[1,2]},"timestamp":"2026-01-02T03:04:05Z"}`,
		`{"v":1,"type":"chunk","id":"k","reply_to":"m","userid":"u","seq":2,"stream":true,"content":null,"timestamp":"2026-01-02T03:04:05Z"}`,
		`{"v":1.5,"type":"message","id":"m","userid":"u"}`,
		`{"v":1,"type":"message","id":"m","userid":"u","seq":"2"}`,
		`{"v":1,"type":"message","id":"m","userid":"u","timestamp":"yesterday"}`,
		`{"v":1,"type":"message","id":"m","userid":"u"} trailing`,
		`[1,2]`, `null`, ``, `{"v":1,`,
	}
	for _, in := range ins {
		got, gotErr := Unmarshal([]byte(in))
		var want Envelope
		wantErr := stdjson.Unmarshal([]byte(in), &want)
		if wantErr == nil {
			wantErr = want.Validate()
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: error %v, encoding/json's %v", in, gotErr, wantErr)
			continue
		}
		if gotErr == nil && !reflect.DeepEqual(*got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", in, *got, want)
		}
	}
}

// Every field of Envelope is written: one set to a non-zero value in turn
// comes out as encoding/json writes it. A field added to the struct and not
// to Marshal (encode.go) fails here.
func TestMarshalWritesEveryField(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	typ := reflect.TypeFor[Envelope]()
	for i := range typ.NumField() {
		var e Envelope
		f := reflect.ValueOf(&e).Elem().Field(i)
		switch f.Interface().(type) {
		case string:
			f.SetString("x<" + typ.Field(i).Name + ">")
		case int:
			f.SetInt(7)
		case bool:
			f.SetBool(true)
		case time.Time:
			f.Set(reflect.ValueOf(ts))
		default:
			t.Fatalf("field %s: type %s not known to this test (nor perhaps to Marshal)", typ.Field(i).Name, f.Type())
		}
		got, err := Marshal(&e)
		if err != nil {
			t.Fatalf("field %s: %v", typ.Field(i).Name, err)
		}
		want, _ := stdjson.Marshal(&e)
		if string(got) != string(want) {
			t.Errorf("field %s:\n got %s\nwant %s", typ.Field(i).Name, got, want)
		}
	}
}

// A time encoding/json refuses (year 10000) is refused, not written.
func TestMarshalRefusesWhatEncodingJSONRefuses(t *testing.T) {
	e := &Envelope{Type: TypeMessage, ID: "m", UserID: "u", Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := stdjson.Marshal(e); err == nil {
		t.Fatal("encoding/json took year 10000")
	}
	if b, err := Marshal(e); err == nil {
		t.Fatalf("Marshal wrote %s", b)
	}
}
