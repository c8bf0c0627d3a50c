package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/fakeopenai"
	"github.com/chatrelay/chat/internal/testinfra"
)

const (
	fallbackModel = "fallback-model"
	fallbackKey   = "sk-test-e2e-fallback-key"
)

// startFallbackStack is startStackWith for one gateway, with the model the
// ai-consumer binary builds (aiconsumer.NewModel, which reads
// LLM_FALLBACKS) instead of the tests' client of the primary alone. The
// primary is s.OpenAI; fallback is the second fake API, which wants its
// own key.
func startFallbackStack(t *testing.T, fallback *fakeopenai.Server, env map[string]string) *stack {
	t.Helper()
	r := testinfra.StartRedis(t)
	s := &stack{
		Redis: r, RedisURL: r.URL(), Kafka: testinfra.StartKafka(t, testinfra.WithPartitions(4)),
		OpenAI: fakeopenai.Start(t, fakeopenai.WithAPIKey(testAPIKey)),
		Reg:    prometheus.NewRegistry(), Logs: filepath.Join(t.TempDir(), "services.log"),
	}
	env["LLM_FALLBACKS"] = fallbackModel + "@" + fallback.BaseURL()
	env["LLM_FALLBACK_API_KEYS"] = fallbackKey
	// A stalled fake fails its test in seconds, not OPENAI_TIMEOUT's minute.
	env["OPENAI_TIMEOUT"] = "5s"
	opts := stackOptions(s, env, 1)
	opts.Model = aiconsumer.NewModel
	s.WSBase = "ws://" + runServices(t, s.Logs, s.Reg, opts).Gateways[0].Addr()
	return s
}

// answerOf sends content (streamed or not) and returns the answer frame
// with the model it names.
func answerOf(t *testing.T, c *testinfra.ChatClient, content string, stream bool) (f testinfra.Frame, model string, chunks string) {
	t.Helper()
	if err := c.Conn.WriteJSON(map[string]any{"type": "message", "content": content, "userid": c.UserID, "stream": stream}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.Next(wait)
		if err != nil {
			t.Fatalf("no answer to %q: %v", content, err)
		}
		switch f.Type {
		case "chunk":
			chunks += f.Delta
			continue
		case "response", "error":
			var named struct{ Model string }
			if err := json.Unmarshal([]byte(f.Raw), &named); err != nil {
				t.Fatal(err)
			}
			return f, named.Model, chunks
		}
	}
}

// metricValue reads one series of the stack's registry, by its labels.
func metricValue(t *testing.T, s *stack, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := s.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			matched := 0
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					matched++
				}
			}
			if mf.GetName() == name && matched == len(labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// Two OpenAI-compatible servers and the real go-openai client through the
// services: the fallback answers when the primary is rate limited, failing
// or down (its breaker opens and it is no longer asked), never for a bad
// request, and the response frame names the model that answered.
func TestFallbackModels(t *testing.T) {
	fallback := fakeopenai.Start(t, fakeopenai.WithAPIKey(fallbackKey))
	// The primary's breaker opens after two failures and stays open for the
	// rest of the test, so that it is seen to be no longer asked.
	s := startFallbackStack(t, fallback, map[string]string{"LLM_BREAKER_FAILURES": "2", "LLM_BREAKER_OPEN_FOR": "1m"})
	primary := s.OpenAI
	c := testinfra.DialChat(t, s.WSBase, testSecret, "falls-back")

	primary.FailNext(1, 429, "1")
	if f, model, _ := answerOf(t, c, "one", false); f.Type != "response" || f.Content != "echo: one" || model != fallbackModel {
		t.Fatalf("rate-limited primary: answer %s, model %q; want the fallback's", f.Raw, model)
	}
	if len(primary.RequestsFor("one")) != 1 || len(fallback.RequestsFor("one")) != 1 {
		t.Fatalf("asked primary %d, fallback %d times; want once each", len(primary.RequestsFor("one")), len(fallback.RequestsFor("one")))
	}
	if f, model, _ := answerOf(t, c, "two", false); f.Content != "echo: two" || model != "test-model" || len(fallback.RequestsFor("two")) != 0 {
		t.Fatalf("healthy primary: answer %s, model %q; want the primary's alone", f.Raw, model)
	}
	primary.FailNext(1, 503, "")
	if f, model, chunks := answerOf(t, c, "three", true); f.Content != "echo: three" || chunks != f.Content || model != fallbackModel {
		t.Fatalf("streamed, failing primary: answer %s, chunks %q, model %q; want the fallback's stream alone", f.Raw, chunks, model)
	}
	primary.FailNext(1, 400, "")
	if f, model, _ := answerOf(t, c, "four", false); f.Type != "error" || model != "" || len(fallback.RequestsFor("four")) != 0 {
		t.Fatalf("bad request: answer %s, model %q, fallback asked %d times; want an error frame and no fallback",
			f.Raw, model, len(fallback.RequestsFor("four")))
	}

	primary.SetDown(true)
	var asked int
	for i, content := range []string{"five", "six", "seven", "eight"} {
		if f, model, _ := answerOf(t, c, content, false); f.Content != "echo: "+content || model != fallbackModel {
			t.Fatalf("primary down: answer %s, model %q; want the fallback's", f.Raw, model)
		}
		if i == 1 {
			asked = primary.Requests()
		}
	}
	if primary.Requests() != asked {
		t.Errorf("the primary was asked %d more times after its breaker opened", primary.Requests()-asked)
	}
	checkFallbackMetrics(t, s)
}

func checkFallbackMetrics(t *testing.T, s *stack) {
	t.Helper()
	for _, m := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"chat_llm_requests_total", map[string]string{"outcome": "ok", "model": fallbackModel}, 6},
		{"chat_llm_requests_total", map[string]string{"outcome": "ok", "model": "test-model"}, 1},
		{"chat_llm_requests_total", map[string]string{"outcome": "client", "model": "test-model"}, 1},
		{"chat_llm_fallbacks_total", map[string]string{"model": "test-model", "class": "rate_limited"}, 1},
		{"chat_llm_fallbacks_total", map[string]string{"model": "test-model", "class": "server"}, 1},
		{"chat_llm_fallbacks_total", map[string]string{"model": "test-model", "class": "transport"}, 2},
		{"chat_llm_fallbacks_total", map[string]string{"model": "test-model", "class": "circuit_open"}, 2},
		{"chat_llm_breaker_state", map[string]string{"model": "test-model", "state": "open"}, 1},
		{"chat_llm_breaker_state", map[string]string{"model": fallbackModel, "state": "closed"}, 1},
	} {
		if got := metricValue(t, s, m.name, m.labels); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	if logs, err := os.ReadFile(s.Logs); err != nil || strings.Contains(string(logs), fallbackKey) {
		t.Errorf("the fallback's key is in the services' logs (or they cannot be read: %v)", err)
	}
}
