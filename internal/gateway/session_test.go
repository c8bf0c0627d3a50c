package gateway

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeSlots is the user's socket limit in memory; Refresh can be held at a
// gate to play an interleaving.
type fakeSlots struct {
	mu      sync.Mutex
	held    map[string]bool
	entered chan struct{}
	gate    chan struct{}
}

func (f *fakeSlots) Acquire(_ context.Context, _, connID string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[connID] = true
	return true, nil
}

// Refresh re-adds an expired slot, as the Redis script does.
func (f *fakeSlots) Refresh(_ context.Context, _, connID string) (bool, error) {
	if f.gate != nil {
		f.entered <- struct{}{}
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[connID] = true
	return true, nil
}

func (f *fakeSlots) Release(_ context.Context, _, connID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, connID)
	return nil
}

// Issue 11, defect 11: a ping's refresh of the socket's slot that is still
// on its way when the socket closes and releases the slot must not add the
// slot back (it would count against the user for the slot's TTL). The
// refresh is held at the seam while the release runs.
func TestReleasedSlotIsNeverRefreshed(t *testing.T) {
	f := &fakeSlots{held: map[string]bool{}, entered: make(chan struct{}), gate: make(chan struct{})}
	var slot socketSlot
	ctx := context.Background()
	_, _ = f.Acquire(ctx, "u1", "c1")
	refreshed := make(chan struct{})
	go func() {
		_, _ = slot.refresh(ctx, f, "u1", "c1")
		close(refreshed)
	}()
	<-f.entered // the refresh is under way
	released := make(chan struct{})
	go func() {
		_ = slot.release(ctx, f, "u1", "c1")
		close(released)
	}()
	time.Sleep(50 * time.Millisecond) // let the release run as far as it can
	close(f.gate)
	<-refreshed
	<-released
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held["c1"] {
		t.Fatal("the released slot is held again")
	}
	// And a refresh after the release does nothing.
	f.gate = nil
	if ok, err := slot.refresh(ctx, f, "u1", "c1"); !ok || err != nil || f.held["c1"] {
		t.Fatalf("refresh after release: ok %v err %v held %v", ok, err, f.held["c1"])
	}
}
