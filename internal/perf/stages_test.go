package perf

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/chatrelay/chat/internal/process"
)

// stages turns the spans a PERF_TRACES run exports into where a message's
// time goes between the hops: the end-to-end latency loadgen reports says
// how long, these say where, so a queue that grows with the rate can be
// told from the rest. All processes run on this machine, so their span
// times share one clock.
//
// A message's trace has, in order: the gateway's chat.receive (the frame
// read until the broker acknowledged the produce: the ack), the
// ai-consumer's process span with the model call's span inside, the relay's process span with its publish
// span inside, and the gateway's chat.deliver (the answer's frame written).
type stages struct {
	// mu guards traces and pipelines: the sink's handler adds each export
	// on its own goroutine, and table reads them once the run is over.
	mu     sync.Mutex
	traces map[[16]byte]*msgSpans
	// pipelines are each service's redis.pipeline spans (redisbatch): how
	// long a shared pipeline took, from its building to its replies read,
	// and how many callers it carried.
	pipelines map[string]*pipelineSpans
}

type pipelineSpans struct {
	durations []int64
	callers   int64
}

// span is one span's start and end, in Unix nanoseconds.
type span struct{ start, end int64 }

func (s *span) take(start, end int64) {
	if s.start == 0 || start < s.start {
		s.start = start
	}
	if end > s.end {
		s.end = end
	}
}

// msgSpans are one message's spans; a span redone (a retried record) counts
// from its first start to its last end.
type msgSpans struct{ receive, ai, model, relay, publish, deliver span }

// stageDefs are the table's rows: each a gap or a span of one message.
var stageDefs = []struct {
	name string
	of   func(m *msgSpans) int64
}{
	{"gateway: frame read → ack (chat.receive)", func(m *msgSpans) int64 { return m.receive.end - m.receive.start }},
	{"incoming_messages: ack → ai-consumer's start", func(m *msgSpans) int64 { return m.ai.start - m.receive.end }},
	{"ai-consumer: process span", func(m *msgSpans) int64 { return m.ai.end - m.ai.start }},
	{"ai-consumer: start → model call (stored answer, memory, budget)", func(m *msgSpans) int64 { return m.model.start - m.ai.start }},
	{"ai-consumer: model call", func(m *msgSpans) int64 { return m.model.end - m.model.start }},
	{"ai-consumer: model call's end → end (settle, store, produce)", func(m *msgSpans) int64 { return m.ai.end - m.model.end }},
	{"responses: ai-consumer's end → relay's start", func(m *msgSpans) int64 { return m.relay.start - m.ai.end }},
	{"relay: start → publish span's end", func(m *msgSpans) int64 { return m.publish.end - m.relay.start }},
	{"Redis channel: publish span's start → chat.deliver's start", func(m *msgSpans) int64 { return m.deliver.start - m.publish.start }},
	{"gateway: chat.deliver", func(m *msgSpans) int64 { return m.deliver.end - m.deliver.start }},
	{"frame read → answer written (the sum)", func(m *msgSpans) int64 { return m.deliver.end - m.receive.start }},
}

func newStages() *stages {
	return &stages{traces: map[[16]byte]*msgSpans{}, pipelines: map[string]*pipelineSpans{}}
}

// add takes one OTLP/HTTP export request's body.
func (st *stages) add(body []byte) error {
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := serviceName(rs)
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				st.record(service, sp)
			}
		}
	}
	return nil
}

func serviceName(rs *tracepb.ResourceSpans) string {
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// record keeps sp if it is one of a message's hop spans.
func (st *stages) record(service string, sp *tracepb.Span) {
	var pick func(m *msgSpans) *span
	name := sp.GetName()
	switch {
	case name == "redis.pipeline":
		st.recordPipeline(service, sp)
		return
	case service == process.Gateway && name == "chat.receive":
		pick = func(m *msgSpans) *span { return &m.receive }
	case service == process.Gateway && name == "chat.deliver":
		pick = func(m *msgSpans) *span { return &m.deliver }
	case service == process.AIConsumer && strings.HasPrefix(name, "process "):
		pick = func(m *msgSpans) *span { return &m.ai }
	case service == process.AIConsumer && strings.HasPrefix(name, "chat "):
		pick = func(m *msgSpans) *span { return &m.model }
	case service == process.Relay && strings.HasPrefix(name, "process "):
		pick = func(m *msgSpans) *span { return &m.relay }
	case service == process.Relay && name == "publish":
		pick = func(m *msgSpans) *span { return &m.publish }
	default:
		return
	}
	id := [16]byte(sp.GetTraceId())
	m := st.traces[id]
	if m == nil {
		m = &msgSpans{}
		st.traces[id] = m
	}
	pick(m).take(int64(sp.GetStartTimeUnixNano()), int64(sp.GetEndTimeUnixNano()))
}

func (st *stages) recordPipeline(service string, sp *tracepb.Span) {
	p := st.pipelines[service]
	if p == nil {
		p = &pipelineSpans{}
		st.pipelines[service] = p
	}
	p.durations = append(p.durations, int64(sp.GetEndTimeUnixNano()-sp.GetStartTimeUnixNano()))
	for _, kv := range sp.GetAttributes() {
		if kv.GetKey() == "chat.batch.callers" {
			p.callers += kv.GetValue().GetIntValue()
		}
	}
}

// complete reports whether every hop's span of m arrived.
func (m *msgSpans) complete() bool {
	for _, s := range []span{m.receive, m.ai, m.model, m.relay, m.publish, m.deliver} {
		if s.start == 0 {
			return false
		}
	}
	return true
}

// table is the breakdown as markdown: p50, p90, p99 of each stage over the
// messages whose every span arrived.
func (st *stages) table() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	values := make([][]int64, len(stageDefs))
	n := 0
	for _, m := range st.traces {
		if !m.complete() {
			continue
		}
		n++
		for i, d := range stageDefs {
			values[i] = append(values[i], d.of(m))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Where a message's time goes, from its spans (%d of %d traces with every hop; ms):\n\n", n, len(st.traces))
	b.WriteString("| stage | p50 | p90 | p99 |\n|---|---|---|---|\n")
	for i, d := range stageDefs {
		v := values[i]
		slices.Sort(v)
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", d.name, nsMS(quantile(v, 0.5)), nsMS(quantile(v, 0.9)), nsMS(quantile(v, 0.99)))
	}
	b.WriteString(st.pipelineTable())
	return b.String()
}

// pipelineTable is each service's Redis pipelines: how many, their callers,
// and how long one took.
func (st *stages) pipelineTable() string {
	services := make([]string, 0, len(st.pipelines))
	for s := range st.pipelines {
		services = append(services, s)
	}
	slices.Sort(services)
	var b strings.Builder
	b.WriteString("\nRedis pipelines (redisbatch's redis.pipeline spans: building, round trip, replies read; ms):\n\n")
	b.WriteString("| service | pipelines | callers per pipeline | p50 | p90 | p99 |\n|---|---|---|---|---|---|\n")
	for _, s := range services {
		p := st.pipelines[s]
		slices.Sort(p.durations)
		n := len(p.durations)
		fmt.Fprintf(&b, "| %s | %d | %.1f | %s | %s | %s |\n", s, n, float64(p.callers)/float64(max(n, 1)),
			nsMS(quantile(p.durations, 0.5)), nsMS(quantile(p.durations, 0.9)), nsMS(quantile(p.durations, 0.99)))
	}
	return b.String()
}

// quantile is the q-th of sorted v (nearest rank), 0 for none.
func quantile(v []int64, q float64) int64 {
	if len(v) == 0 {
		return 0
	}
	i := int(q*float64(len(v))+0.5) - 1
	return v[max(0, min(i, len(v)-1))]
}

func nsMS(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/float64(time.Millisecond)) }
