package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
)

// fakePubSub records the commands the hub sends and hands its receive loop
// what the test pushes, so each interleaving of commands, confirmations and
// connection losses can be played exactly.
type fakePubSub struct {
	t  *testing.T
	in chan any

	mu      sync.Mutex
	cmds    []string          // "subscribe <channel>" / "unsubscribe <channel>", in order
	waiting map[string]string // channel → command not yet confirmed
	failing bool              // writes fail (connection gone)
	sent    chan string
}

func newFakePubSub(t *testing.T) *fakePubSub {
	return &fakePubSub{t: t, in: make(chan any, 100), waiting: map[string]string{}, sent: make(chan string, 100)}
}

func (f *fakePubSub) command(kind string, channels []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range channels {
		if prev, ok := f.waiting[ch]; ok {
			f.t.Errorf("%s %s sent while %s of it was not confirmed", kind, ch, prev)
		}
		f.waiting[ch] = kind
		f.cmds = append(f.cmds, kind+" "+ch)
		f.sent <- kind + " " + ch
	}
	if f.failing {
		return errors.New("write: broken pipe")
	}
	return nil
}

func (f *fakePubSub) Subscribe(_ context.Context, chs ...string) error {
	return f.command("subscribe", chs)
}

func (f *fakePubSub) Unsubscribe(_ context.Context, chs ...string) error {
	return f.command("unsubscribe", chs)
}

func (f *fakePubSub) ReceiveTimeout(ctx context.Context, d time.Duration) (any, error) {
	select {
	case m := <-f.in:
		if err, ok := m.(error); ok {
			return nil, err
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakePubSub) Ping(context.Context, ...string) error { return nil }
func (f *fakePubSub) Close() error                          { return nil }

// confirm makes Redis answer the command waiting for ch.
func (f *fakePubSub) confirm(ch string) {
	f.mu.Lock()
	kind, ok := f.waiting[ch]
	delete(f.waiting, ch)
	f.mu.Unlock()
	if !ok {
		f.t.Fatalf("nothing to confirm for %s", ch)
	}
	f.in <- &redis.Subscription{Kind: kind, Channel: ch}
}

// drop loses the connection: nothing waiting will be confirmed on it.
func (f *fakePubSub) drop() {
	f.mu.Lock()
	clear(f.waiting)
	f.mu.Unlock()
	f.in <- errors.New("read: connection reset by peer")
}

func (f *fakePubSub) expect(want string) { f.t.Helper(); expectSent(f.t, f.sent, want) }
func (f *fakePubSub) quiet()             { f.t.Helper(); quietOn(f.t, f.sent, 100*time.Millisecond) }

// expectSent fails t unless the next command sent is want.
func expectSent(t *testing.T, sent <-chan string, want string) {
	t.Helper()
	select {
	case got := <-sent:
		if got != want {
			t.Fatalf("sent %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing sent, want %q", want)
	}
}

// quietOn fails t if a command is sent within d.
func quietOn(t *testing.T, sent <-chan string, d time.Duration) {
	t.Helper()
	select {
	case got := <-sent:
		t.Fatalf("unexpected %q", got)
	case <-time.After(d):
	}
}

func (f *fakePubSub) publish(user, id string) {
	b, _ := envelope.Marshal(answer(user, id))
	f.in <- &redis.Message{Channel: UserChannel(user), Payload: string(b)}
}

func startFakeHub(t *testing.T) (*Hub, *fakePubSub) {
	f := newFakePubSub(t)
	h := newHub(f, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, f
}

// subscribeAsync starts a Subscribe and returns where its result lands.
func subscribeAsync(h *Hub, user string, s Sink) chan error {
	res := make(chan error, 1)
	go func() { _, err := h.Subscribe(context.Background(), user, s); res <- err }()
	return res
}

func waitErr(t *testing.T, res chan error, what string) {
	t.Helper()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not done", what)
	}
}

func pending(t *testing.T, res chan error, what string) {
	t.Helper()
	select {
	case err := <-res:
		t.Fatalf("%s returned (%v) before the channel was subscribed", what, err)
	case <-time.After(100 * time.Millisecond):
	}
}

// subscribeThenLeave subscribes a sink of u1 (confirmed), then removes it:
// the UNSUBSCRIBE is sent and not yet confirmed.
func subscribeThenLeave(t *testing.T, h *Hub, f *fakePubSub) {
	t.Helper()
	ch := UserChannel("u1")
	a := newSink()
	res := subscribeAsync(h, "u1", a)
	f.expect("subscribe " + ch)
	f.confirm(ch)
	waitErr(t, res, "first subscribe")
	h.remove("u1", a)
	f.expect("unsubscribe " + ch)
}

func TestHubStateMachine(t *testing.T) {
	ch := UserChannel("u1")

	t.Run("a sink arriving during an unsubscribe waits for it, then subscribes", func(t *testing.T) {
		h, f := startFakeHub(t)
		b := newSink()
		subscribeThenLeave(t, h, f)
		res := subscribeAsync(h, "u1", b)
		f.quiet() // no SUBSCRIBE while the UNSUBSCRIBE is unconfirmed
		pending(t, res, "second subscribe")
		f.confirm(ch)
		f.expect("subscribe " + ch)
		pending(t, res, "second subscribe")
		f.confirm(ch)
		waitErr(t, res, "second subscribe")
		f.publish("u1", "r1")
		b.wait(t, 1)
	})

	t.Run("the connection is lost while unsubscribing, with a sink waiting", func(t *testing.T) {
		h, f := startFakeHub(t)
		b := newSink()
		subscribeThenLeave(t, h, f)
		res := subscribeAsync(h, "u1", b)
		pending(t, res, "second subscribe")
		f.drop() // the UNSUBSCRIBE's confirmation will never come
		f.expect("subscribe " + ch)
		f.confirm(ch)
		waitErr(t, res, "second subscribe")
	})

	t.Run("a resubscription after a reconnect resyncs before the next message", func(t *testing.T) {
		h, f := startFakeHub(t)
		a := &orderSink{}
		res := subscribeAsync(h, "u1", a)
		f.expect("subscribe " + ch)
		f.confirm(ch)
		waitErr(t, res, "subscribe")
		f.drop()
		// go-redis subscribes its list again on the new connection.
		f.in <- &redis.Subscription{Kind: "subscribe", Channel: ch}
		f.publish("u1", "r1")
		a.waitFor(t, []string{"resync", "r1"})
		f.quiet() // the hub itself sent nothing: go-redis did
	})

	t.Run("a subscribe not confirmed in time unsubscribes once it is", func(t *testing.T) {
		h, f := startFakeHub(t)
		h.SubscribeTimeout = 50 * time.Millisecond
		res := subscribeAsync(h, "u1", newSink())
		f.expect("subscribe " + ch)
		select {
		case err := <-res:
			if err == nil {
				t.Fatal("subscribe succeeded without a confirmation")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscribe did not time out")
		}
		f.quiet()
		f.confirm(ch)
		f.expect("unsubscribe " + ch)
		f.confirm(ch)
		f.quiet()
		if n := h.Users(); n != 0 {
			t.Fatalf("Users() = %d after the last sink left", n)
		}
	})

	t.Run("a failed UNSUBSCRIBE write leaves the channel free to subscribe", func(t *testing.T) {
		h, f := startFakeHub(t)
		a := newSink()
		res := subscribeAsync(h, "u1", a)
		f.expect("subscribe " + ch)
		f.confirm(ch)
		waitErr(t, res, "first subscribe")
		f.mu.Lock()
		f.failing = true
		f.mu.Unlock()
		h.remove("u1", a)
		f.expect("unsubscribe " + ch)
		f.mu.Lock()
		f.failing = false
		clear(f.waiting) // that connection is gone
		f.mu.Unlock()
		res = subscribeAsync(h, "u1", newSink())
		f.expect("subscribe " + ch)
		f.confirm(ch)
		waitErr(t, res, "second subscribe")
	})
}

// orderSink records deliveries and resyncs in the order they happen.
type orderSink struct {
	mu     sync.Mutex
	events []string
}

func (s *orderSink) Deliver(e *envelope.Envelope) { s.add(e.ID) }
func (s *orderSink) Resync()                      { s.add("resync") }
func (s *orderSink) add(ev string) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
}

func (s *orderSink) waitFor(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		got := slices.Clone(s.events)
		s.mu.Unlock()
		if len(got) >= len(want) {
			if !slices.Equal(got, want) {
				t.Fatalf("events %v, want %v", got, want)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(fmt.Sprintf("events never reached %v", want))
}
