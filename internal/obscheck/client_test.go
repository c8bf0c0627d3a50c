package obscheck

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/auth"
)

// serverFrame is the part of a server frame the tests look at.
type serverFrame struct {
	Type          string `json:"type"`
	Content       string `json:"content"`
	Message       string `json:"message"`
	CorrelationID string `json:"correlation_id"`
}

// chatClient is one user's WebSocket connection. A reader goroutine drains
// every frame into frames, so the server never sees a slow consumer.
type chatClient struct {
	user   string
	conn   *websocket.Conn
	frames chan serverFrame
	wmu    sync.Mutex
}

// dialChat connects user to the devstack's gateway with a fresh token.
func dialChat(t testing.TB, d *devstack, user string) *chatClient {
	t.Helper()
	tok, err := auth.Mint([]byte(d.secret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u := "ws://" + d.httpAddr + "/ws?userid=" + url.QueryEscape(user) + "&token=" + url.QueryEscape(tok)
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := dialer.Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s as %s: %v (HTTP %d)", d.httpAddr, user, err, status)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	c := &chatClient{user: user, conn: conn, frames: make(chan serverFrame, 1024)}
	go c.readLoop()
	t.Cleanup(func() { _ = c.conn.Close() })
	return c
}

func (c *chatClient) readLoop() {
	defer close(c.frames)
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		var f serverFrame
		if json.Unmarshal(data, &f) != nil {
			f.Type = "undecodable"
		}
		select {
		case c.frames <- f:
		default: // nobody is looking: drop, the socket must keep draining
		}
	}
}

// send writes one chat message.
func (c *chatClient) send(content, correlationID string) error {
	frame := map[string]string{"type": "message", "content": content, "userid": c.user}
	if correlationID != "" {
		frame["correlation_id"] = correlationID
	}
	b, err := json.Marshal(frame)
	if err != nil {
		return err
	}
	return c.write(websocket.TextMessage, b)
}

func (c *chatClient) write(kind int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.conn.WriteMessage(kind, b)
}

// waitFrame waits for the next frame of type typ, skipping others.
func (c *chatClient) waitFrame(ctx context.Context, typ string) (serverFrame, error) {
	for {
		select {
		case <-ctx.Done():
			return serverFrame{}, fmt.Errorf("%s: no %q frame: %w", c.user, typ, ctx.Err())
		case f, ok := <-c.frames:
			if !ok {
				return serverFrame{}, fmt.Errorf("%s: connection closed while waiting for a %q frame", c.user, typ)
			}
			if f.Type == typ {
				return f, nil
			}
		}
	}
}
