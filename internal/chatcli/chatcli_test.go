package chatcli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/testinfra"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A fake server streams the first answer in chunks, then drops the socket
// before answering the second message; the client reconnects with the
// cursor of the first answer and gets the second one.
func TestChunksReconnectResume(t *testing.T) {
	var mu sync.Mutex
	var resumes []string
	conns := 0
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "tok" || r.URL.Query().Get("userid") != "u1" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		conns++
		n := conns
		resumes = append(resumes, r.URL.Query().Get("resume"))
		mu.Unlock()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if n > 1 {
			_ = c.WriteJSON(map[string]any{"type": "response", "id": "r2", "reply_to": "m2", "userid": "u1", "content": "second answer", "cursor": "2-0"})
			for { // until the client closes
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}
		for i := 1; ; i++ {
			var m map[string]any
			if err := c.ReadJSON(&m); err != nil {
				return
			}
			if m["type"] != "message" || m["userid"] != "u1" || m["stream"] != true {
				t.Errorf("bad frame %v", m)
				return
			}
			_ = c.WriteJSON(map[string]any{"type": "ack", "id": "m" + string(rune('0'+i)), "client_id": m["id"], "userid": "u1"})
			if i == 2 {
				return // dropped before answering
			}
			_ = c.WriteJSON(map[string]any{"type": "chunk", "reply_to": "m1", "seq": 1, "delta": "hello "})
			_ = c.WriteJSON(map[string]any{"type": "chunk", "reply_to": "m1", "seq": 2, "delta": "wor"})
			_ = c.WriteJSON(map[string]any{"type": "response", "id": "r1", "reply_to": "m1", "userid": "u1", "content": "hello world", "cursor": "1-0"})
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out syncBuf
	// The second line is sent only once the first answer is in, so the
	// drop comes after a cursor was seen.
	pr, pw := ioPipe()
	go func() {
		_, _ = pw.Write([]byte("first\n"))
		for !strings.Contains(out.String(), "hello world") && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		_, _ = pw.Write([]byte("second\n"))
		_ = pw.Close()
	}()
	err := Run(ctx, pr, &out, Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", UserID: "u1", Token: "tok", MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"bot: hello world\n", "bot: second answer\n", "reconnecting in"} {
		if !strings.Contains(got, want) {
			t.Fatalf("output lacks %q:\n%s", want, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumes) != 2 || resumes[0] != "" || resumes[1] != "1-0" {
		t.Fatalf("resume parameters %q, want [\"\" \"1-0\"]", resumes)
	}
}

func TestRefusesWithoutToken(t *testing.T) {
	if err := Run(context.Background(), strings.NewReader(""), &bytes.Buffer{}, Options{URL: "ws://x/ws", UserID: "u1"}); err == nil {
		t.Fatal("no error without a token")
	}
	if err := Run(context.Background(), strings.NewReader(""), &bytes.Buffer{}, Options{URL: "ws://x/ws", UserID: "bad user", Token: "t"}); err == nil {
		t.Fatal("no error with a bad user id")
	}
}

// Against the real dev stack: lines in, offline answers out.
func TestDevStack(t *testing.T) {
	const secret = "chatcli-test-secret-0123456789abcdef"
	httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	testinfra.StartProcess(t, "devstack", "devstack", []string{
		"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + secret,
		"RATE_USER_MESSAGES_PER_MIN=0", "LIMIT_IP_CONNECTS_PER_MIN=0",
	}, "http://"+opsAddr+"/readyz")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuf
	err := Run(ctx, strings.NewReader("hello cli\n\nsecond line\n"), &out, Options{URL: "ws://" + httpAddr + "/ws", UserID: "cli-user", Secret: secret})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"You said: hello cli", "You said: second line"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// A status frame (the answer is late) is shown on a line of its own, and
// the answer follows as usual.
func TestStatusIsShown(t *testing.T) {
	var out strings.Builder
	c := &client{out: &out, partial: map[string]string{}, waiting: map[string]bool{"m1": true}, seen: map[string]bool{}, pending: map[string]string{}}
	c.handle(frame{Type: "status", ReplyTo: "m1", Message: "The assistant is busy; your answer is on its way."})
	c.handle(frame{Type: "response", ID: "r1", ReplyTo: "m1", Content: "hello"})
	if got := out.String(); !strings.Contains(got, "* The assistant is busy; your answer is on its way.\n") || !strings.Contains(got, "hello") {
		t.Fatalf("printed %q", got)
	}
}
