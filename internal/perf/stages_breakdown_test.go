package perf

import (
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/chatrelay/chat/internal/process"
)

// export is one OTLP request of service's spans, each {name, start, end}
// in ms, of the trace id.
func export(t *testing.T, service string, trace byte, spans ...[3]any) []byte {
	t.Helper()
	var out []*tracepb.Span
	for _, s := range spans {
		id := make([]byte, 16)
		id[15] = trace
		out = append(out, &tracepb.Span{
			TraceId: id, Name: s[0].(string),
			StartTimeUnixNano: uint64(s[1].(int)) * 1e6, EndTimeUnixNano: uint64(s[2].(int)) * 1e6,
		})
	}
	b, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{
			Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: service}},
		}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: out}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// One message's hop spans, each from its service, give each stage's gap or
// span; a redone process span counts from its first start; a trace that
// lacks a hop, and spans of other names, are left out.
func TestStagesBreakDownAMessage(t *testing.T) {
	st := newStages()
	for _, b := range [][]byte{
		export(t, process.Gateway, 1, [3]any{"chat.receive", 1000, 1002}, [3]any{"GET /ws", 0, 5000}),
		export(t, process.AIConsumer, 1, [3]any{"process incoming_messages", 1005, 1006}, [3]any{"process incoming_messages", 1007, 1015}, [3]any{"redis.pipeline", 1008, 1009}, [3]any{"chat offline", 1009, 1010}),
		export(t, process.Relay, 1, [3]any{"process responses", 1020, 1026}, [3]any{"publish", 1023, 1025}),
		export(t, process.Gateway, 1, [3]any{"chat.deliver", 1024, 1027}),
		// The second message never reaches the relay.
		export(t, process.Gateway, 2, [3]any{"chat.receive", 2000, 2001}),
		export(t, process.AIConsumer, 2, [3]any{"process incoming_messages", 2002, 2003}, [3]any{"chat offline", 2002, 2003}),
	} {
		if err := st.add(b); err != nil {
			t.Fatal(err)
		}
	}
	table := st.table()
	for _, want := range []string{
		"1 of 2 traces",
		"| gateway: frame read → ack (chat.receive) | 2.00 | 2.00 | 2.00 |",
		"| incoming_messages: ack → ai-consumer's start | 3.00 |",
		"| ai-consumer: process span | 10.00 |",
		"| ai-consumer: start → model call (stored answer, memory, budget) | 4.00 |",
		"| ai-consumer: model call | 1.00 |",
		"| ai-consumer: model call's end → end (settle, store, produce) | 5.00 |",
		"| responses: ai-consumer's end → relay's start | 5.00 |",
		"| relay: start → publish span's end | 5.00 |",
		"| Redis channel: publish span's start → chat.deliver's start | 1.00 |",
		"| gateway: chat.deliver | 3.00 |",
		"| frame read → answer written (the sum) | 27.00 |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if err := st.add([]byte("not a protobuf")); err == nil {
		t.Error("a body that is not an export was taken")
	}
}

func TestQuantileNearestRank(t *testing.T) {
	v := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]int64{0.5: 5, 0.9: 9, 0.99: 10} {
		if got := quantile(v, q); got != want {
			t.Errorf("quantile(%v) = %d, want %d", q, got, want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing")
	}
}

// Each service's redis.pipeline spans give how many pipelines it sent,
// their callers on average and how long one took.
func TestStagesSummarizePipelines(t *testing.T) {
	st := newStages()
	for i, callers := range []int64{1, 3} {
		st.record(process.AIConsumer, &tracepb.Span{
			Name: "redis.pipeline", StartTimeUnixNano: 1e9, EndTimeUnixNano: 1e9 + uint64(i+1)*2e6,
			Attributes: []*commonpb.KeyValue{{Key: "chat.batch.callers", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: callers}}}},
		})
	}
	if want := "| ai-consumer | 2 | 2.0 | 2.00 | 4.00 | 4.00 |"; !strings.Contains(st.table(), want) {
		t.Errorf("table lacks %q:\n%s", want, st.table())
	}
}
