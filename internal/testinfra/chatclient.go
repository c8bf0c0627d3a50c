package testinfra

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/auth"
)

// Frame is any server frame, decoded loosely so tests see exactly what the
// server sent.
type Frame struct {
	Type          string `json:"type"`
	ID            string `json:"id"`
	Content       string `json:"content"`
	Message       string `json:"message"`
	UserID        string `json:"userid"`
	Timestamp     string `json:"timestamp"`
	ReplyTo       string `json:"reply_to"`
	ClientID      string `json:"client_id"`
	CorrelationID string `json:"correlation_id"`
	Cursor        string `json:"cursor"`
	Seq           int    `json:"seq"`
	Delta         string `json:"delta"`
	Raw           string `json:"-"`
}

// ChatClient is a minimal WebSocket chat client for tests.
type ChatClient struct {
	Conn   *websocket.Conn
	UserID string

	// skipped holds frames an Expect read past, oldest first; Next returns
	// them before reading. Frames of one message may arrive in either
	// order (the answer can overtake the ack, which waits for the broker's
	// callback), so waiting for one must not lose the other.
	skipped []Frame

	// Ready is the cursor of the last "ready" frame: where the connection
	// started in the user's history. Next and Expect take ready frames
	// out of the stream (they come first on every connection) unless
	// KeepReady is set.
	Ready     string
	KeepReady bool
}

// ChatURL builds the /ws URL for base (ws://host:port) with a fresh token.
func ChatURL(base, secret, userID string) string {
	tok, err := auth.Mint([]byte(secret), userID, time.Hour)
	if err != nil {
		panic(err)
	}
	return base + "/ws?userid=" + url.QueryEscape(userID) + "&token=" + url.QueryEscape(tok)
}

// DialChat connects userID to base (ws://host:port) with a token minted from
// secret, failing the test on error (call it from the test's goroutine).
func DialChat(t testing.TB, base, secret, userID string) *ChatClient {
	t.Helper()
	c, err := Dial(base, secret, userID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Conn.Close() })
	return c
}

// Dial connects userID to base; safe from any goroutine. The caller closes.
func Dial(base, secret, userID string) (*ChatClient, error) {
	return DialURL(ChatURL(base, secret, userID), userID)
}

// DialURL connects to a full /ws URL (token, resume and all) as userID.
func DialURL(rawURL, userID string) (*ChatClient, error) {
	c, resp, err := websocket.DefaultDialer.Dial(rawURL, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		u, _ := url.Parse(rawURL)
		return nil, fmt.Errorf("dial %s as %s: %w (HTTP %d)", u.Host, userID, err, status)
	}
	return &ChatClient{Conn: c, UserID: userID}, nil
}

// DialStatus attempts a connection and returns the HTTP status of a refusal
// (or 101 on success, closing the socket).
func DialStatus(rawURL string, header http.Header) int {
	c, resp, err := websocket.DefaultDialer.Dial(rawURL, header)
	if err == nil {
		_ = c.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// Send sends a message frame with an optional client id.
func (c *ChatClient) Send(content, clientID string) error {
	f := map[string]string{"type": "message", "content": content, "userid": c.UserID}
	if clientID != "" {
		f["id"] = clientID
	}
	return c.Conn.WriteJSON(f)
}

// SendRaw sends an arbitrary text frame.
func (c *ChatClient) SendRaw(data string) error {
	return c.Conn.WriteMessage(websocket.TextMessage, []byte(data))
}

// Next reads one frame within timeout.
func (c *ChatClient) Next(timeout time.Duration) (Frame, error) {
	if len(c.skipped) > 0 {
		f := c.skipped[0]
		c.skipped = c.skipped[1:]
		return f, nil
	}
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.read(deadline)
		if err != nil || f.Type != "ready" || c.KeepReady {
			return f, err
		}
		c.Ready = f.Cursor
	}
}

func (c *ChatClient) read(deadline time.Time) (Frame, error) {
	_ = c.Conn.SetReadDeadline(deadline)
	_, data, err := c.Conn.ReadMessage()
	if err != nil {
		return Frame{}, err
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return Frame{}, fmt.Errorf("server sent invalid JSON %q: %w", data, err)
	}
	f.Raw = string(data)
	return f, nil
}

// Expect returns the first frame of type typ, failing the test on timeout.
// The frames before it are returned too, in order, for inspection, and stay
// unread: the next Next or Expect sees them.
func (c *ChatClient) Expect(t testing.TB, typ string, timeout time.Duration) (Frame, []Frame) {
	t.Helper()
	// Frames skipped earlier come first; the ones skipped now stay for the
	// next Next or Expect, in order.
	for i, f := range c.skipped {
		if f.Type == typ {
			others := slices.Clone(c.skipped[:i])
			c.skipped = slices.Delete(c.skipped, i, i+1)
			return f, others
		}
	}
	others := slices.Clone(c.skipped)
	c.skipped = nil
	defer func() { c.skipped = append(c.skipped, others...) }()
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("%s: no %q frame within %s (got %d others: %+v)", c.UserID, typ, timeout, len(others), others)
		}
		f, err := c.Next(left)
		if err != nil {
			t.Fatalf("%s: waiting for %q: %v (others: %+v)", c.UserID, typ, err, others)
		}
		if f.Type == typ {
			return f, slices.Clone(others)
		}
		others = append(others, f)
	}
}
