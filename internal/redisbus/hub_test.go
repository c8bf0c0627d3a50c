package redisbus

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/testinfra"
)

type sink struct {
	mu      sync.Mutex
	got     []*envelope.Envelope
	ch      chan struct{}
	resyncs int
}

func (s *sink) Resync() {
	s.mu.Lock()
	s.resyncs++
	s.mu.Unlock()
}

func newSink() *sink { return &sink{ch: make(chan struct{}, 100)} }

func (s *sink) Deliver(e *envelope.Envelope) {
	s.mu.Lock()
	s.got = append(s.got, e)
	s.mu.Unlock()
	s.ch <- struct{}{}
}

func (s *sink) wait(t *testing.T, n int) []*envelope.Envelope {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-s.ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d deliveries", i, n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*envelope.Envelope(nil), s.got...)
}

func (s *sink) none(t *testing.T) {
	t.Helper()
	select {
	case <-s.ch:
		t.Fatal("unexpected delivery")
	case <-time.After(200 * time.Millisecond):
	}
}

func answer(user, id string) *envelope.Envelope {
	return &envelope.Envelope{Type: envelope.TypeResponse, ID: id, ReplyTo: "m-" + id, UserID: user, Content: "c", CorrelationID: "corr", Timestamp: time.Now()}
}

func TestHub(t *testing.T) {
	srv := testinfra.StartRedis(t, testinfra.WithPersistence())
	c, err := NewClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hub := NewHub(c, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	defer func() { cancel(); <-done }()

	a1, a2, b := newSink(), newSink(), newSink()
	unA1, err := hub.Subscribe(ctx, "alice", a1)
	if err != nil {
		t.Fatal(err)
	}
	unA2, err := hub.Subscribe(ctx, "alice", a2)
	if err != nil {
		t.Fatal(err)
	}
	unB, err := hub.Subscribe(ctx, "bob", b)
	if err != nil {
		t.Fatal(err)
	}
	if hub.Users() != 2 {
		t.Fatalf("users %d", hub.Users())
	}

	t.Run("published right after subscribe is delivered to every sink of the user only", func(t *testing.T) {
		if err := Publish(ctx, c, answer("alice", "r1")); err != nil {
			t.Fatal(err)
		}
		if got := a1.wait(t, 1); got[0].ID != "r1" {
			t.Fatalf("a1 got %+v", got[0])
		}
		a2.wait(t, 1)
		b.none(t)
	})

	t.Run("payload for another user on a channel is dropped", func(t *testing.T) {
		bad, _ := envelope.Marshal(answer("mallory", "x"))
		if err := c.Publish(ctx, UserChannel("bob"), bad).Err(); err != nil {
			t.Fatal(err)
		}
		b.none(t)
	})

	t.Run("unsubscribing the last sink of a user stops delivery", func(t *testing.T) {
		unA1()
		_ = Publish(ctx, c, answer("alice", "r2"))
		if got := a2.wait(t, 1); len(got) != 2 || got[1].ID != "r2" {
			t.Fatalf("a2 got %+v", got)
		}
		a1.none(t)
		unA2()
		if hub.Users() != 1 {
			t.Fatalf("users %d", hub.Users())
		}
		n, err := c.PubSubNumSub(ctx, UserChannel("alice")).Result()
		if err != nil || n[UserChannel("alice")] != 0 {
			t.Fatalf("alice still subscribed: %v %v", n, err)
		}
	})

	t.Run("the hub resubscribes after a Redis restart", func(t *testing.T) {
		srv.Restart()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			n, err := c.PubSubNumSub(ctx, UserChannel("bob")).Result()
			if err == nil && n[UserChannel("bob")] == 1 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := Publish(ctx, c, answer("bob", "r3")); err != nil {
			t.Fatal(err)
		}
		if got := b.wait(t, 1); got[len(got)-1].ID != "r3" {
			t.Fatalf("bob got %+v", got)
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.resyncs < 1 {
			t.Fatal("sink not told to resync after the resubscription")
		}
	})
	unB()
}

func TestNewClientURLs(t *testing.T) {
	tests := []struct {
		url     string
		wantErr bool
	}{
		{"redis://localhost:6379/0", false},
		{"rediss://user:pw@localhost:6380/1", false},
		{"redis+cluster://localhost:7000?addr=localhost:7001", false},
		{"redis+sentinel://localhost:26379?master_name=mymaster", false},
		{"http://localhost", true},
		{"redis+mesh://localhost", true},
		{"redis://localhost:6379/notadb", true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if c != nil {
				_ = c.Close()
			}
			if err != nil && !containsVar(err.Error()) {
				t.Fatalf("error does not name REDIS_URL: %v", err)
			}
		})
	}
}

func containsVar(s string) bool { return len(s) >= 9 && s[:9] == "REDIS_URL" }

func TestChannelNames(t *testing.T) {
	ch := UserChannel("u-1")
	if ch != "chat:{u-1}:live" {
		t.Fatal(ch)
	}
	if u, ok := UserFromChannel(ch); !ok || u != "u-1" {
		t.Fatal(u, ok)
	}
	if _, ok := UserFromChannel("other"); ok {
		t.Fatal("foreign channel parsed")
	}
}
