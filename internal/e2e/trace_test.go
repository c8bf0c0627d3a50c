package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/testinfra"
)

// One message sent with a chosen correlation id is one trace in a real trace
// backend, holding the spans of all three services, correctly parented, and
// every log line about it carries the correlation id and that trace id.
func TestOneTracePerMessage(t *testing.T) {
	j := testinfra.StartJaeger(t)
	s := startSystem(t,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+j.OTLPEndpoint,
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"LOG_LEVEL=debug",
	)
	corr := "trace-check-" + ids.New()
	c := testinfra.DialChat(t, "ws://"+s.Nginx.Addr(), testSecret, "tracer")
	if err := c.Conn.WriteJSON(map[string]string{"type": "message", "content": "follow me", "userid": "tracer", "correlation_id": corr}); err != nil {
		t.Fatal(err)
	}
	ack, _ := c.Expect(t, "ack", wait)
	resp, _ := c.Expect(t, "response", wait)
	if resp.CorrelationID != corr {
		t.Fatalf("response correlation %q", resp.CorrelationID)
	}

	wantServices := []string{"ai-consumer", "message-relay", "websocket-server"}
	wantOps := []string{
		"websocket-server/chat.receive",
		"ai-consumer/process incoming_messages",
		"ai-consumer/chat test-model",
		"message-relay/process responses",
		"message-relay/publish",
		"websocket-server/chat.deliver",
	}
	var tr testinfra.JaegerTrace
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Each service exports its spans as they end, in batches: the
		// ai-consumer's process span ends after the answer is on its way,
		// so it may reach the backend after the delivery's. Wait for all.
		traces, err := j.FindTraces("websocket-server", "correlation_id", corr)
		if err == nil && len(traces) == 1 && len(traces[0].ServiceNames()) == 3 && hasAllOps(traces[0], wantOps) {
			tr = traces[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete trace for %s within 30s: err=%v, %d traces, services %v", corr, err, len(traces), j.Services())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := tr.ServiceNames(); !slices.Equal(got, wantServices) {
		t.Fatalf("trace services %v, want %v", got, wantServices)
	}
	// The same single trace is found from every service.
	for _, svc := range wantServices {
		traces, err := j.FindTraces(svc, "correlation_id", corr)
		if err != nil || len(traces) != 1 || traces[0].TraceID != tr.TraceID {
			t.Fatalf("search from %s: %d traces (err %v)", svc, len(traces), err)
		}
	}

	byID := map[string]testinfra.JaegerSpan{}
	for _, sp := range tr.Spans {
		byID[sp.SpanID] = sp
	}
	roots := 0
	var ops []string
	for _, sp := range tr.Spans {
		ops = append(ops, tr.Service(sp)+"/"+sp.OperationName)
		if sp.Tag("correlation_id") != corr {
			t.Errorf("span %s/%s lacks correlation_id", tr.Service(sp), sp.OperationName)
		}
		for _, tag := range sp.Tags {
			v := fmt.Sprint(tag.Value)
			if strings.Contains(v, testSecret) || strings.Contains(v, testAPIKey) || strings.Contains(v, "eyJ") {
				t.Errorf("span %s/%s tag %s holds a secret or a token", tr.Service(sp), sp.OperationName, tag.Key)
			}
		}
		if len(sp.References) == 0 {
			roots++
			continue
		}
		for _, ref := range sp.References {
			if _, ok := byID[ref.SpanID]; !ok || ref.TraceID != tr.TraceID {
				t.Errorf("span %s/%s refers to a span outside the trace", tr.Service(sp), sp.OperationName)
			}
		}
	}
	sort.Strings(ops)
	if roots != 1 {
		t.Errorf("%d root spans, want 1: %v", roots, ops)
	}
	for _, want := range wantOps {
		if !slices.Contains(ops, want) {
			t.Errorf("trace lacks span %s; has %v", want, ops)
		}
	}
	// Each Kafka hop's process span is the child of the span that produced
	// the record (internal/kafka/tracectx.go): no client spans in between.
	for child, parent := range map[string]string{
		"ai-consumer/process incoming_messages": "websocket-server/chat.receive",
		"message-relay/process responses":       "ai-consumer/process incoming_messages",
	} {
		if got := parentOp(tr, byID, child); got != parent {
			t.Errorf("%s: parent %q, want %s", child, got, parent)
		}
	}

	// Every log line about the message is JSON with its correlation id and
	// the trace's id.
	lines := 0
	for _, p := range append(append([]*testinfra.Process{}, s.Gateways...), s.AI, s.Relay) {
		for _, l := range strings.Split(p.Logs(), "\n") {
			if !strings.Contains(l, corr) && !strings.Contains(l, ack.ID) && !strings.Contains(l, resp.ID) {
				continue
			}
			lines++
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Errorf("%s: not JSON: %s", p.Name, l)
				continue
			}
			if m["correlation_id"] != corr || m["trace_id"] != tr.TraceID || m["span_id"] == nil || m["service"] == nil {
				t.Errorf("%s: log line without the message's ids: %s", p.Name, l)
			}
		}
	}
	if lines < 3 {
		t.Errorf("only %d log lines about the message; expected the services to log its handling at debug level", lines)
	}
}

// parentOp is the "service/operation" of the parent of the first span named
// op ("service/operation"), or "".
func parentOp(tr testinfra.JaegerTrace, byID map[string]testinfra.JaegerSpan, op string) string {
	for _, sp := range tr.Spans {
		if tr.Service(sp)+"/"+sp.OperationName != op || len(sp.References) == 0 {
			continue
		}
		if p, ok := byID[sp.References[0].SpanID]; ok {
			return tr.Service(p) + "/" + p.OperationName
		}
	}
	return ""
}

// hasAllOps reports whether tr holds a span of each "service/operation".
func hasAllOps(tr testinfra.JaegerTrace, ops []string) bool {
	have := map[string]bool{}
	for _, sp := range tr.Spans {
		have[tr.Service(sp)+"/"+sp.OperationName] = true
	}
	for _, op := range ops {
		if !have[op] {
			return false
		}
	}
	return true
}
