package testinfra

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// An answer that overtakes its ack is still there when the test asks for
// it after the ack.
func TestExpectKeepsFramesItReadPast(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for _, typ := range []string{"chunk", "response", "ack"} {
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"`+typ+`"}`))
		}
		_, _, _ = ws.ReadMessage() // until the client goes
	}))
	defer srv.Close()
	c, err := Dial("ws"+strings.TrimPrefix(srv.URL, "http"), "secret-0123456789abcdef", "u1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Conn.Close()

	if _, others := c.Expect(t, "ack", 5*time.Second); len(others) != 2 || others[0].Type != "chunk" || others[1].Type != "response" {
		t.Fatalf("frames before the ack: %+v", others)
	}
	if _, others := c.Expect(t, "response", time.Second); len(others) != 1 || others[0].Type != "chunk" {
		t.Fatalf("frames before the response: %+v", others)
	}
	if f, err := c.Next(time.Second); err != nil || f.Type != "chunk" {
		t.Fatalf("Next after the Expects: %+v, %v", f, err)
	}
}
