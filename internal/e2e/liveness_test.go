package e2e

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/testinfra"
)

// Socket liveness with and without the poller: a client that answers pings
// stays connected and is served; one that does not is closed with 1001;
// a client's ping gets its pong; a malformed control frame closes with 1002.
func TestSocketLiveness(t *testing.T) {
	for _, netpoll := range []string{"true", "false"} {
		t.Run("WS_NETPOLL="+netpoll, func(t *testing.T) {
			s := startStackWith(t, map[string]string{
				"WS_NETPOLL": netpoll, "WS_PING_INTERVAL": "200ms", "WS_PONG_TIMEOUT": "700ms",
			}, 1)

			t.Run("a client answering pings stays and is served", func(t *testing.T) {
				c := testinfra.DialChat(t, s.WSBase, testSecret, "live-answer-"+netpoll)
				var pings atomic.Int32
				c.Conn.SetPingHandler(func(data string) error {
					pings.Add(1)
					return c.Conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
				})
				// Reading is what answers the pings.
				if _, err := c.Next(2 * time.Second); err == nil {
					t.Fatal("a frame arrived on an idle socket")
				} else if websocket.IsUnexpectedCloseError(err) || errors.As(err, new(*websocket.CloseError)) {
					t.Fatalf("closed while answering pings: %v", err)
				}
				if pings.Load() < 3 {
					t.Fatalf("%d pings in 2s with a 200ms interval", pings.Load())
				}
				// A read deadline spoils a gorilla connection: use a fresh one.
				c2 := testinfra.DialChat(t, s.WSBase, testSecret, "live-answer-"+netpoll)
				if err := c2.Send("still there?", "m1"); err != nil {
					t.Fatal(err)
				}
				c2.Expect(t, "response", 10*time.Second)
			})

			t.Run("a silent client is closed with 1001", func(t *testing.T) {
				c := testinfra.DialChat(t, s.WSBase, testSecret, "live-silent-"+netpoll)
				c.Conn.SetPingHandler(func(string) error { return nil }) // never answers
				time.Sleep(1500 * time.Millisecond)                      // not reading: no pongs
				expectClose(t, c, websocket.CloseGoingAway)
			})

			t.Run("a client ping gets its pong", func(t *testing.T) {
				c := testinfra.DialChat(t, s.WSBase, testSecret, "live-ping-"+netpoll)
				got := make(chan string, 1)
				c.Conn.SetPongHandler(func(data string) error {
					select {
					case got <- data:
					default:
					}
					return nil
				})
				if err := c.Conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
				go func() {
					for {
						if _, _, err := c.Conn.ReadMessage(); err != nil {
							return
						}
					}
				}()
				select {
				case d := <-got:
					if d != "are you there" {
						t.Fatalf("pong payload %q", d)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("no pong")
				}
			})

			for _, tc := range []struct {
				name  string
				frame []byte
			}{
				{"unmasked ping", []byte{0x89, 0x00}},
				{"fragmented ping", []byte{0x09, 0x80, 1, 2, 3, 4}},
				{"ping with reserved bits", []byte{0xc9, 0x80, 1, 2, 3, 4}},
				{"ping longer than 125 bytes", append([]byte{0x89, 0xfe, 0x00, 0x80, 1, 2, 3, 4}, make([]byte, 128)...)},
			} {
				t.Run(tc.name+" closes with 1002", func(t *testing.T) {
					c := testinfra.DialChat(t, s.WSBase, testSecret, "live-bad-"+netpoll)
					if _, err := c.Conn.NetConn().Write(tc.frame); err != nil {
						t.Fatal(err)
					}
					expectClose(t, c, websocket.CloseProtocolError)
					// The server is fine for everyone else.
					ok := testinfra.DialChat(t, s.WSBase, testSecret, "live-good-"+netpoll)
					if err := ok.Send("hello", "g1"); err != nil {
						t.Fatal(err)
					}
					ok.Expect(t, "response", 10*time.Second)
				})
			}
		})
	}
}

// expectClose reads c (skipping frames) until the server closes it with code.
func expectClose(t *testing.T, c *testinfra.ChatClient, code int) {
	t.Helper()
	expectCloseWithin(t, c, code, 5*time.Second)
}

// expectCloseWithin is expectClose with its own timeout.
func expectCloseWithin(t *testing.T, c *testinfra.ChatClient, code int, timeout time.Duration) {
	t.Helper()
	_ = c.Conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, _, err := c.Conn.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			t.Fatalf("want close %d, got %v", code, err)
		}
		return
	}
}
