package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/testinfra"
)

const wait = 15 * time.Second

func TestPipeline(t *testing.T) { testPipeline(t, startStack(t)) }

func testPipeline(t *testing.T, s *stack) {

	t.Run("message gets ack then response", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "alice")
		if err := c.Conn.WriteJSON(map[string]string{"type": "message", "content": "hello there", "userid": "alice", "id": "c-1", "correlation_id": "corr-alice-1"}); err != nil {
			t.Fatal(err)
		}
		ack, _ := c.Expect(t, "ack", wait)
		if ack.ID == "" || ack.ClientID != "c-1" || ack.CorrelationID != "corr-alice-1" || ack.UserID != "alice" {
			t.Fatalf("bad ack: %s", ack.Raw)
		}
		resp, others := c.Expect(t, "response", wait)
		if len(others) != 0 {
			t.Fatalf("unexpected frames before the response: %+v", others)
		}
		if resp.Content != "echo: hello there" || resp.UserID != "alice" || resp.ReplyTo != ack.ID ||
			resp.CorrelationID != "corr-alice-1" || resp.ID == "" || resp.ID == ack.ID {
			t.Fatalf("bad response: %s", resp.Raw)
		}
		if _, err := time.Parse(time.RFC3339, resp.Timestamp); err != nil {
			t.Fatalf("timestamp %q is not RFC 3339: %v", resp.Timestamp, err)
		}
		reqs := s.OpenAI.RequestsFor("hello there")
		if len(reqs) != 1 || reqs[0].Model != "test-model" || reqs[0].Messages[0].Role != "system" {
			t.Fatalf("model saw %+v", reqs)
		}
	})

	t.Run("server makes a correlation id when the client gives none or a bad one", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "bob")
		for _, corr := range []string{"", "has spaces", strings.Repeat("x", 65)} {
			f := map[string]string{"type": "message", "content": "hi", "userid": "bob"}
			if corr != "" {
				f["correlation_id"] = corr
			}
			_ = c.Conn.WriteJSON(f)
			ack, _ := c.Expect(t, "ack", wait)
			if ack.CorrelationID == "" || ack.CorrelationID == corr {
				t.Fatalf("correlation id %q → %q", corr, ack.CorrelationID)
			}
			resp, _ := c.Expect(t, "response", wait)
			if resp.CorrelationID != ack.CorrelationID {
				t.Fatalf("response correlation %q, ack %q", resp.CorrelationID, ack.CorrelationID)
			}
		}
	})

	t.Run("bad frames get an error and the socket stays usable", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "carol")
		cases := []struct{ name, frame, want string }{
			{"bad json", `{"type":`, "invalid JSON"},
			{"unknown type", `{"type":"shout","content":"x","userid":"carol"}`, "unknown frame type"},
			{"empty content", `{"type":"message","content":"","userid":"carol"}`, "content is empty"},
			{"spoofed userid", `{"type":"message","content":"x","userid":"mallory"}`, "userid does not match"},
			{"too long", `{"type":"message","content":"` + strings.Repeat("a", 2001) + `","userid":"carol"}`, "longer than 2000"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if err := c.SendRaw(tc.frame); err != nil {
					t.Fatal(err)
				}
				f, err := c.Next(wait)
				if err != nil {
					t.Fatal(err)
				}
				if f.Type != "error" || !strings.Contains(f.Message, tc.want) || f.UserID != "carol" {
					t.Fatalf("got %s, want an error containing %q", f.Raw, tc.want)
				}
			})
		}
		if err := c.Send("still here?", ""); err != nil {
			t.Fatal(err)
		}
		c.Expect(t, "ack", wait)
		resp, _ := c.Expect(t, "response", wait)
		if resp.Content != "echo: still here?" {
			t.Fatalf("socket not usable after errors: %s", resp.Raw)
		}
		if n := testutil.ToFloat64(mustMetric(t, s, "chat_gateway_messages_rejected_total", "reason", "userid_mismatch")); n < 1 {
			t.Fatalf("rejections not counted: %v", n)
		}
	})

	t.Run("oversized frame closes with 1009", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "dave")
		_ = c.SendRaw(`{"type":"message","content":"` + strings.Repeat("a", 5000) + `","userid":"dave"}`)
		_, err := c.Next(wait)
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("want close 1009, got %v", err)
		}
	})

	t.Run("every socket of the user gets the answer", func(t *testing.T) {
		a := testinfra.DialChat(t, s.WSBase, testSecret, "erin")
		b := testinfra.DialChat(t, s.WSBase, testSecret, "erin")
		other := testinfra.DialChat(t, s.WSBase, testSecret, "frank")
		_ = a.Send("to both", "")
		ack, _ := a.Expect(t, "ack", wait)
		ra, _ := a.Expect(t, "response", wait)
		rb, _ := b.Expect(t, "response", wait)
		if ra.ID != rb.ID || ra.ReplyTo != ack.ID {
			t.Fatalf("sockets got different answers: %s / %s", ra.Raw, rb.Raw)
		}
		if f, err := other.Next(300 * time.Millisecond); err == nil {
			t.Fatalf("another user received %s", f.Raw)
		}
	})

	t.Run("a model that refuses gives one error frame", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "gina")
		s.OpenAI.FailNext(1, http.StatusBadRequest, "")
		_ = c.Send("make it fail", "")
		ack, _ := c.Expect(t, "ack", wait)
		e, _ := c.Expect(t, "error", wait)
		if e.Message != aiconsumer.FailureMessage || e.ReplyTo != ack.ID {
			t.Fatalf("bad error frame: %s", e.Raw)
		}
	})

	t.Run("a transient model error is retried", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "hank")
		s.OpenAI.FailNext(2, http.StatusInternalServerError, "")
		_ = c.Send("retry me", "")
		c.Expect(t, "ack", wait)
		r, others := c.Expect(t, "response", wait)
		if r.Content != "echo: retry me" || len(others) != 0 {
			t.Fatalf("got %s after %+v", r.Raw, others)
		}
	})

	t.Run("the model sees the conversation so far", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "memory-user")
		for i, q := range []string{"my name is Ada", "what is my name?"} {
			if err := c.Send(q, fmt.Sprintf("mem-%d", i)); err != nil {
				t.Fatal(err)
			}
			c.Expect(t, "response", 15*time.Second)
		}
		// The first answer may reach the history a moment after the
		// client sees it; the second question was sent after that.
		reqs := s.OpenAI.RequestsFor("what is my name?")
		if len(reqs) != 1 {
			t.Fatalf("%d model requests for the second question", len(reqs))
		}
		var got []string
		for _, m := range reqs[0].Messages {
			got = append(got, m.Role+": "+m.Content)
		}
		want := []string{"user: my name is Ada", "assistant: echo: my name is Ada", "user: what is my name?"}
		if len(got) < 4 || !slices.Equal(got[len(got)-3:], want) || reqs[0].Messages[0].Role != "system" {
			t.Fatalf("model saw %q, want system prompt then %q", got, want)
		}
	})

	t.Run("one user's messages are answered in order", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "ivan")
		for i := 0; i < 20; i++ {
			_ = c.Send(fmt.Sprintf("n%02d", i), "")
		}
		for i := 0; i < 20; i++ {
			r, _ := c.Expect(t, "response", wait)
			if r.Content != fmt.Sprintf("echo: n%02d", i) {
				t.Fatalf("answer %d out of order: %q", i, r.Content)
			}
		}
	})
}

func TestConnectRefusals(t *testing.T) {
	s := startStack(t)
	http := strings.Replace(s.WSBase, "ws://", "ws://", 1)
	expired, _ := auth.Mint([]byte(testSecret), "u1", -time.Hour)
	other, _ := auth.Mint([]byte("another-secret-0123456789"), "u1", time.Hour)
	good, _ := auth.Mint([]byte(testSecret), "u1", time.Hour)
	tests := []struct {
		name, query string
		want        int
	}{
		{"no token", "/ws?userid=u1", 401},
		{"garbage token", "/ws?userid=u1&token=garbage", 401},
		{"expired", "/ws?userid=u1&token=" + expired, 401},
		{"wrong secret", "/ws?userid=u1&token=" + other, 401},
		{"sub is another user", "/ws?userid=u2&token=" + good, 401},
		{"no userid", "/ws?token=" + good, 401},
		{"good", "/ws?userid=u1&token=" + good, 101},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := testinfra.DialStatus(http+tc.query, nil); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
}
