package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"

	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/rediskeys"
	"github.com/chatrelay/chat/internal/testinfra"
)

// Every bad input gets its exact refusal, and the service then still serves
// a good client. Two gateways share Redis, so the per-user limits are
// checked across instances. The run's logs and metrics must hold no secret.
func TestSecurityRefusals(t *testing.T) {
	s := startStackWith(t, map[string]string{
		"RATE_USER_MESSAGES_PER_MIN": "6",
		"RATE_USER_MESSAGES_BURST":   "5",
		"LIMIT_USER_SOCKETS":         "3",
		"LIMIT_IP_CONNECTS_PER_MIN":  "0",
		"WS_ALLOWED_ORIGINS":         "https://chat.example",
	}, 2)
	var tokens []string
	mint := func(claims jwt.MapClaims, method jwt.SigningMethod, key any) string {
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, tok)
		return tok
	}
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	good := func(user string) string {
		return mint(jwt.MapClaims{"sub": user, "exp": exp}, jwt.SigningMethodHS256, []byte(testSecret))
	}
	served := 0
	stillServes := func(t *testing.T) {
		t.Helper()
		served++ // a fresh user each time: the message rate limit is per user
		c := testinfra.DialChat(t, s.WSBases[1], testSecret, fmt.Sprintf("good-client-%d", served))
		_ = c.Send("are you there?", "")
		if r, _ := c.Expect(t, "response", wait); r.Content != "echo: are you there?" {
			t.Fatalf("good client not served: %s", r.Raw)
		}
	}

	t.Run("connect", func(t *testing.T) {
		tests := []struct {
			name, query string
			header      http.Header
			want        int
		}{
			{"no token", "userid=u1", nil, 401},
			{"garbage token", "userid=u1&token=garbage.garbage.garbage", nil, 401},
			{"expired", "userid=u1&token=" + mint(jwt.MapClaims{"sub": "u1", "exp": now.Add(-time.Hour).Unix()}, jwt.SigningMethodHS256, []byte(testSecret)), nil, 401},
			{"wrongly signed", "userid=u1&token=" + mint(jwt.MapClaims{"sub": "u1", "exp": exp}, jwt.SigningMethodHS256, []byte("not-the-secret-0123456789")), nil, 401},
			{"alg none", "userid=u1&token=" + mint(jwt.MapClaims{"sub": "u1", "exp": exp}, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType), nil, 401},
			{"wrong sub", "userid=u1&token=" + good("u2"), nil, 401},
			{"bad origin", "userid=u1&token=" + good("u1"), http.Header{"Origin": {"https://evil.example"}}, 403},
			{"allowed origin", "userid=u1&token=" + good("u1"), http.Header{"Origin": {"https://chat.example"}}, 101},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := testinfra.DialStatus(s.WSBase+"/ws?"+tc.query, tc.header); got != tc.want {
					t.Fatalf("status %d, want %d", got, tc.want)
				}
				stillServes(t)
			})
		}
	})

	t.Run("frames", func(t *testing.T) {
		tests := []struct {
			name, frame, want string
		}{
			{"invalid JSON", `{"type":"message",`, "invalid JSON"},
			{"invalid UTF-8", "{\"type\":\"message\",\"content\":\"\xff\xfe\",\"userid\":\"frames\"}", "UTF-8"},
			{"unknown type", `{"type":"admin","content":"x","userid":"frames"}`, "unknown frame type"},
			{"empty content", `{"type":"message","content":"   ","userid":"frames"}`, "content is empty"},
			{"spoofed userid", `{"type":"message","content":"x","userid":"victim"}`, "userid does not match"},
			{"unknown field", `{"type":"message","content":"x","userid":"frames","role":"admin"}`, "invalid JSON"},
		}
		c := testinfra.DialChat(t, s.WSBase, testSecret, "frames")
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_ = c.SendRaw(tc.frame)
				f, err := c.Next(wait)
				if err != nil || f.Type != "error" || !strings.Contains(f.Message, tc.want) {
					t.Fatalf("got %+v %v, want an error frame with %q", f, err, tc.want)
				}
				stillServes(t)
			})
		}
		t.Run("oversized frame", func(t *testing.T) {
			big := testinfra.DialChat(t, s.WSBase, testSecret, "big")
			_ = big.SendRaw(`{"type":"message","content":"` + strings.Repeat("x", 5000) + `","userid":"big"}`)
			if _, err := big.Next(wait); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
				t.Fatalf("want close 1009, got %v", err)
			}
			stillServes(t)
		})
	})

	t.Run("flood past the rate limit from two instances at once", func(t *testing.T) {
		a := testinfra.DialChat(t, s.WSBases[0], testSecret, "flood")
		b := testinfra.DialChat(t, s.WSBases[1], testSecret, "flood")
		var wg sync.WaitGroup
		for _, c := range []*testinfra.ChatClient{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					_ = c.Send("spam", "")
				}
			}()
		}
		wg.Wait()
		acks, limited := 0, 0
		for _, c := range []*testinfra.ChatClient{a, b} {
			for i := 0; i < 10; i++ {
				f, err := c.Next(wait)
				for err == nil && f.Type == "response" { // answers of accepted ones interleave
					f, err = c.Next(wait)
				}
				switch {
				case err != nil:
					t.Fatal(err)
				case f.Type == "ack":
					acks++
				case f.Type == "error" && strings.Contains(f.Message, "too many messages"):
					limited++
				default:
					t.Fatalf("unexpected %s", f.Raw)
				}
			}
		}
		// Burst 5 plus at most one refill (6/min) across both instances.
		if acks < 5 || acks > 6 || acks+limited != 20 {
			t.Fatalf("%d accepted, %d limited across two instances; want 5-6 accepted", acks, limited)
		}
		stillServes(t)
	})

	t.Run("spent daily budget, on both instances", func(t *testing.T) {
		rdb := redisClient(t, s)
		ctx := context.Background()
		// The shipped LIMIT_USER_TOKENS_PER_DAY, spent today (and tomorrow,
		// should the test straddle a UTC midnight).
		for _, day := range []time.Time{time.Now(), time.Now().Add(24 * time.Hour)} {
			if err := rdb.Set(ctx, rediskeys.DailyTokens("spent", day), 200000, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, base := range s.WSBases {
			c := testinfra.DialChat(t, base, testSecret, "spent")
			_ = c.Send("one more?", "")
			f, err := c.Next(wait)
			if err != nil || f.Type != "error" || f.Message != protocol.FrameTokenBudget.Message {
				t.Fatalf("%s: got %+v %v, want the budget's refusal %q", base, f, err, protocol.FrameTokenBudget.Message)
			}
		}
		stillServes(t)
	})

	t.Run("too many sockets", func(t *testing.T) {
		for i, base := range []string{s.WSBases[0], s.WSBases[1], s.WSBases[0]} {
			c, _, err := websocket.DefaultDialer.Dial(base+"/ws?userid=many&token="+good("many"), nil)
			if err != nil {
				t.Fatalf("socket %d refused: %v", i+1, err)
			}
			defer c.Close()
		}
		if got := testinfra.DialStatus(s.WSBases[1]+"/ws?userid=many&token="+good("many"), nil); got != http.StatusTooManyRequests {
			t.Fatalf("fourth socket across instances: status %d, want 429", got)
		}
		stillServes(t)
	})

	// Nothing secret in the logs or the metrics of this run.
	logs, _ := os.ReadFile(s.Logs)
	var metrics bytes.Buffer
	mfs, _ := s.Reg.Gather()
	for _, mf := range mfs {
		_, _ = expfmt.MetricFamilyToText(&metrics, mf)
	}
	for _, secret := range append([]string{testSecret, testAPIKey}, tokens...) {
		if bytes.Contains(logs, []byte(secret)) || bytes.Contains(metrics.Bytes(), []byte(secret)) {
			t.Errorf("a secret (%.12s…) appears in the logs or metrics", secret)
		}
	}
}

// The instance's socket cap refuses with close 1013 after the upgrade.
func TestInstanceFullCloses1013(t *testing.T) {
	s := startStackWith(t, map[string]string{"LIMIT_INSTANCE_SOCKETS": "2", "LIMIT_IP_CONNECTS_PER_MIN": "0"}, 1)
	testinfra.DialChat(t, s.WSBase, testSecret, "a")
	testinfra.DialChat(t, s.WSBase, testSecret, "b")
	c := testinfra.DialChat(t, s.WSBase, testSecret, "c")
	if _, err := c.Next(wait); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("want close 1013, got %v", err)
	}
}
