package redisbus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// heldUnsubscribe is the real pub/sub connection with a gate in front of
// UNSUBSCRIBE: the test decides when it reaches Redis.
type heldUnsubscribe struct {
	PubSub
	entered chan struct{} // an Unsubscribe call is waiting at the gate
	release chan struct{}
}

func (h *heldUnsubscribe) Unsubscribe(ctx context.Context, channels ...string) error {
	h.entered <- struct{}{}
	<-h.release
	return h.PubSub.Unsubscribe(ctx, channels...)
}

// The last socket of a user leaves (its UNSUBSCRIBE is on its way) while a
// new socket of the same user arrives — a page reload. However the two
// interleave, the new socket must end up subscribed: a late UNSUBSCRIBE
// must never undo a newer SUBSCRIBE (issue 11, defect 1: the socket went
// deaf for good). The interleaving is forced: UNSUBSCRIBE is held at the
// seam until the new Subscribe has had every chance to run.
func TestLateUnsubscribeCannotUndoNewerSubscribe(t *testing.T) {
	srv := testinfra.StartRedis(t)
	c, err := NewClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gate := &heldUnsubscribe{PubSub: c.Subscribe(context.Background()), entered: make(chan struct{}, 1), release: make(chan struct{})}
	hub := newHub(gate, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	defer func() { cancel(); <-done }()

	old, fresh := newSink(), newSink()
	unOld, err := hub.Subscribe(ctx, "carol", old)
	if err != nil {
		t.Fatal(err)
	}
	go unOld()
	select {
	case <-gate.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the last sink left but no UNSUBSCRIBE was sent")
	}
	subscribed := make(chan error, 1)
	go func() {
		_, err := hub.Subscribe(ctx, "carol", fresh)
		subscribed <- err
	}()
	// Either the new Subscribe completes before the held UNSUBSCRIBE (the
	// dangerous order), or it waits for it; give it the chance, then let
	// the UNSUBSCRIBE through.
	var early error
	select {
	case early = <-subscribed:
		subscribed <- early
	case <-time.After(300 * time.Millisecond):
	}
	close(gate.release)
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("new socket's subscribe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("new socket's subscribe never completed")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := Publish(ctx, c, answer("carol", "r1")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-fresh.ch:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n, _ := c.PubSubNumSub(ctx, UserChannel("carol")).Result()
			t.Fatalf("the new socket is deaf: nothing delivered for 5 s (subscribers of the channel in Redis: %d)", n[UserChannel("carol")])
		}
	}
}
