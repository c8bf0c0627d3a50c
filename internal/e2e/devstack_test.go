package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/testinfra"
)

// make run: the dev binary with no configuration prints a ready-to-use URL
// whose token works, and the offline model says what it is.
func TestDevStackPrintsWorkingURL(t *testing.T) {
	httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	p := testinfra.StartProcess(t, "devstack", "devstack", []string{"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr}, "http://"+opsAddr+"/readyz")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitLog(ctx, "ws://"); err != nil {
		t.Fatal(err)
	}
	url := regexp.MustCompile(`ws://\S+`).FindString(p.Logs())
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("printed URL %q does not connect: %v", url, err)
	}
	defer c.Close()
	client := &testinfra.ChatClient{Conn: c, UserID: "demo"}
	if err := client.Send("hello", ""); err != nil {
		t.Fatal(err)
	}
	client.Expect(t, "ack", 15*time.Second)
	r, _ := client.Expect(t, "response", 15*time.Second)
	if !strings.HasPrefix(r.Content, llm.OfflineNotice) || !strings.Contains(r.Content, "hello") {
		t.Fatalf("offline answer does not say it is offline: %q", r.Content)
	}
	p.Stop()
	if code := p.ExitCode(); code != 0 {
		t.Fatalf("devstack exited %d on SIGTERM:\n%s", code, p.Logs())
	}
}

// The standalone ai-consumer refuses to start without a key unless told to
// use the offline model, naming the variable.
func TestAIConsumerRefusesToStartWithoutKey(t *testing.T) {
	p := testinfra.StartProcess(t, "ai-consumer", "ai-consumer", []string{"OPS_ADDR=" + testinfra.FreeAddr(t)}, "")
	p.Wait(20 * time.Second)
	if p.ExitCode() != 1 || !strings.Contains(p.Logs(), "OPENAI_API_KEY") {
		t.Fatalf("exit %d, log:\n%s", p.ExitCode(), p.Logs())
	}
}

// Bad configuration fails fast with a message naming the variable.
func TestBadConfigNamesTheVariable(t *testing.T) {
	tests := []struct{ binary, env, want string }{
		{"websocket-server", "AUTH_SECRET=short", "AUTH_SECRET"},
		{"websocket-server", "WS_PING_INTERVAL=soon", "WS_PING_INTERVAL"},
		{"message-relay", "KAFKA_TOPIC_PARTITIONS=0", "KAFKA_TOPIC_PARTITIONS"},
		{"message-relay", "LOG_LEVEL=loud", "LOG_LEVEL"},
		{"ai-consumer", "OPS_ADDR=nonsense", "OPS_ADDR"},
		{"ai-consumer", "KAFKA_FETCH_MAX_WAIT=5ms", "KAFKA_FETCH_MAX_WAIT"},
		{"message-relay", "KAFKA_FETCH_MIN_BYTES=0", "KAFKA_FETCH_MIN_BYTES"},
	}
	for _, tc := range tests {
		t.Run(tc.binary+" "+tc.env, func(t *testing.T) {
			// Later entries win: the case's variable overrides the defaults.
			env := []string{"LLM_OFFLINE=true", "AUTH_SECRET=0123456789abcdef0", "OPS_ADDR=" + testinfra.FreeAddr(t), tc.env}
			p := testinfra.StartProcess(t, tc.binary, tc.binary, env, "")
			p.Wait(20 * time.Second)
			if p.ExitCode() != 1 || !strings.Contains(p.Logs(), tc.want) {
				t.Fatalf("exit %d, want 1 with %q in:\n%s", p.ExitCode(), tc.want, p.Logs())
			}
		})
	}
}
