package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/testinfra"
)

// Two "instances" (two clients) share the global model limits.
func TestModelLimitsAcrossInstances(t *testing.T) {
	srv := testinfra.StartRedis(t)
	a := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	b := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer a.Close()
	defer b.Close()

	t.Run("concurrency", func(t *testing.T) {
		cfg := ModelConfig{MaxConcurrent: 3}
		ms := []*Model{NewModel(a, cfg), NewModel(b, cfg)}
		var inFlight, peak atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				release, err := ms[i%2].Acquire(context.Background(), fmt.Sprintf("call-%d", i), 0)
				if err != nil {
					t.Error(err)
					return
				}
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(20 * time.Millisecond)
				inFlight.Add(-1)
				release()
			}()
		}
		wg.Wait()
		if peak.Load() != 3 {
			t.Fatalf("peak %d calls in flight across instances, want 3", peak.Load())
		}
	})

	t.Run("requests per minute wait rather than fail", func(t *testing.T) {
		cfg := ModelConfig{RequestsPerMin: 600} // one every 100ms, burst 600/min… burst = rate
		m := NewModel(a, ModelConfig{RequestsPerMin: cfg.RequestsPerMin})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := 0; i < 5; i++ {
			release, err := m.Acquire(ctx, "r", 0)
			if err != nil {
				t.Fatal(err)
			}
			release()
		}
	})

	t.Run("a spent token budget makes the caller wait until ctx ends", func(t *testing.T) {
		m := NewModel(b, ModelConfig{TokensPerMin: 100})
		if _, err := m.Acquire(context.Background(), "t1", 100); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := m.Acquire(ctx, "t2", 100); err == nil {
			t.Fatal("a second full-budget call within the minute must wait")
		}
	})
}
