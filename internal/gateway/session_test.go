package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/ratelimit"
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

// X-Real-IP names the client only when nginx (a trusted peer) sends it;
// anyone else could claim an exempt address with it.
func TestRealIPOnlyFromTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		trusted, peer, header, want string
	}{
		{"127.0.0.0/8,10.0.0.0/8", "10.1.2.3:4000", "203.0.113.9", "203.0.113.9"},
		{"127.0.0.0/8,10.0.0.0/8", "127.0.0.1:4000", "203.0.113.9", "203.0.113.9"},
		{"10.9.0.0/16", "127.0.0.1:4000", "127.0.0.1", "127.0.0.1"},
		{"10.9.0.0/16", "10.1.2.3:4000", "127.0.0.1", "10.1.2.3"},
		{"none", "127.0.0.1:4000", "203.0.113.9", "127.0.0.1"},
		{"::1/128", "[::1]:4000", "2001:db8::1", "2001:db8::1"},
	} {
		nets, err := ratelimit.ParseNetworksOf("TRUSTED_PROXY_NETWORKS", tc.trusted)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.RemoteAddr = tc.peer
		r.Header.Set("X-Real-IP", tc.header)
		if got := realIPExtractor(nets)(r); got != tc.want {
			t.Errorf("trusted %s, peer %s, X-Real-IP %s: client %s, want %s", tc.trusted, tc.peer, tc.header, got, tc.want)
		}
	}
}
