package redisbatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/testinfra"
)

func client(t *testing.T) redis.UniversalClient {
	t.Helper()
	srv := testinfra.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// gate holds the first pipeline at the seam until released, so the calls
// made meanwhile are forced to queue behind it.
type gate struct {
	mu      sync.Mutex
	sizes   []int
	first   chan struct{} // closed when the first pipeline reached the seam
	release chan struct{}
}

func newGate(b *Batcher) *gate {
	g := &gate{first: make(chan struct{}), release: make(chan struct{})}
	b.batchHook = func(n int) {
		g.mu.Lock()
		g.sizes = append(g.sizes, n)
		isFirst := len(g.sizes) == 1
		g.mu.Unlock()
		if isFirst {
			close(g.first)
			<-g.release
		}
	}
	return g
}

func (g *gate) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// Calls made while the only pipeline in flight is busy go out together in
// the next one, and each caller gets its own commands' results.
func TestCallsQueuedBehindABusyPipelineShareTheNext(t *testing.T) {
	rdb := client(t)
	b := New(rdb, Config{MaxInFlight: 1})
	g := newGate(b)
	ctx := context.Background()

	firstDone := make(chan error, 1)
	go func() {
		_, err := b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Set(ctx, "first", "1", 0); return nil })
		firstDone <- err
	}()
	<-g.first

	const n = 20
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n)
	queued := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var incr *redis.IntCmd
			var get *redis.StringCmd
			queued <- struct{}{}
			cmds, err := b.Pipelined(ctx, func(p redis.Pipeliner) error {
				key := fmt.Sprintf("k%d", i)
				incr = p.IncrBy(ctx, key, int64(i))
				get = p.Get(ctx, key)
				return nil
			})
			if err == nil && len(cmds) != 2 {
				err = fmt.Errorf("%d commands returned, want this caller's 2", len(cmds))
			}
			errs[i] = err
			if err == nil && incr.Val() == int64(i) {
				got[i] = get.Val()
			}
		}()
	}
	for range n {
		<-queued
	}
	waitQueued(t, b, n)
	close(g.release)
	wg.Wait()
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil || got[i] != fmt.Sprint(i) {
			t.Errorf("caller %d: %q, %v; want %d", i, got[i], errs[i], i)
		}
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[1] != n {
		t.Errorf("pipelines carried %v callers, want [1 %d]", sizes, n)
	}
}

// waitQueued waits until n requests wait in the queue.
func waitQueued(t *testing.T, b *Batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		q := len(b.queue)
		b.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// One caller's failing command (or redis.Nil) is that caller's error only.
func TestErrorsStayWithTheirCaller(t *testing.T) {
	rdb := client(t)
	b := New(rdb, Config{MaxInFlight: 1})
	g := newGate(b)
	ctx := context.Background()
	if err := rdb.Set(ctx, "text", "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Ping(ctx); return nil }) }()
	<-g.first

	type result struct {
		name string
		err  error
	}
	results := make(chan result, 3)
	call := func(name string, fn func(p redis.Pipeliner)) {
		go func() {
			_, err := b.Pipelined(ctx, func(p redis.Pipeliner) error { fn(p); return nil })
			results <- result{name, err}
		}()
	}
	call("incr-text", func(p redis.Pipeliner) { p.Incr(ctx, "text") })
	call("get-missing", func(p redis.Pipeliner) { p.Get(ctx, "missing") })
	call("set", func(p redis.Pipeliner) { p.Set(ctx, "ok", "1", 0) })
	waitQueued(t, b, 3)
	close(g.release)
	for range 3 {
		r := <-results
		switch r.name {
		case "incr-text":
			if r.err == nil || errors.Is(r.err, redis.Nil) {
				t.Errorf("INCR of text: %v, want the server's error", r.err)
			}
		case "get-missing":
			if !errors.Is(r.err, redis.Nil) {
				t.Errorf("GET of a missing key: %v, want redis.Nil", r.err)
			}
		case "set":
			if r.err != nil {
				t.Errorf("SET in the same pipeline: %v", r.err)
			}
		}
	}
}

// A caller that gives up while queued gets its context's error at once,
// and its commands are not sent; the others in its pipeline are unharmed.
func TestAGivenUpCallerIsNotSent(t *testing.T) {
	rdb := client(t)
	b := New(rdb, Config{MaxInFlight: 1})
	g := newGate(b)
	ctx := context.Background()
	go func() { _, _ = b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Ping(ctx); return nil }) }()
	<-g.first

	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := b.Pipelined(cctx, func(p redis.Pipeliner) error { p.Set(ctx, "abandoned", "1", 0); return nil })
		gaveUp <- err
	}()
	kept := make(chan error, 1)
	go func() {
		_, err := b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Set(ctx, "kept", "1", 0); return nil })
		kept <- err
	}()
	waitQueued(t, b, 2)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("given-up caller: %v, want context.Canceled", err)
	}
	close(g.release)
	if err := <-kept; err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Exists(ctx, "abandoned", "kept").Result(); err != nil || n != 1 {
		t.Fatalf("%d of abandoned/kept exist (%v), want only kept", n, err)
	}
}

// With fewer pipelines in flight than allowed, a call goes out alone at
// once: an idle system does not wait for a batch.
func TestAnIdleBatcherSendsAtOnce(t *testing.T) {
	rdb := client(t)
	b := New(rdb, Config{})
	var sizes []int
	var mu sync.Mutex
	b.batchHook = func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }
	ctx := context.Background()
	for i := range 5 {
		if _, err := b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Set(ctx, fmt.Sprint(i), i, 0); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(sizes) != "[1 1 1 1 1]" {
		t.Fatalf("pipelines %v, want five of one", sizes)
	}
	// Each call was sent by its caller: no drainer goroutine was needed.
	if w := b.workers.Workers(); w != 0 {
		t.Fatalf("%d pooled drainers started for calls that met an idle batcher, want 0", w)
	}
	// A drainer hands a caller its result before it looks for more work,
	// so it may still be on its way out.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		running, queued := b.running, len(b.queue)
		b.mu.Unlock()
		if running == 0 && queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the calls: %d drainers running, %d queued; want none", running, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// A caller that sends a pipeline itself returns once its own call is
// answered, even with more queued behind it: a pooled drainer takes over
// the rest (and the caller's slot), so one lane never works for the others.
func TestACallerSendingItsPipelineDoesNotWaitForTheQueue(t *testing.T) {
	rdb := client(t)
	b := New(rdb, Config{MaxInFlight: 1})
	firstAt, secondAt := make(chan struct{}), make(chan struct{})
	releaseFirst, releaseSecond := make(chan struct{}), make(chan struct{})
	var batches int
	b.batchHook = func(int) {
		batches++ // drainers run one at a time (MaxInFlight 1)
		switch batches {
		case 1:
			close(firstAt)
			<-releaseFirst
		case 2:
			close(secondAt)
			<-releaseSecond
		}
	}
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Set(ctx, "a", "1", 0); return nil })
		first <- err
	}()
	<-firstAt
	second := make(chan error, 1)
	go func() {
		_, err := b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Set(ctx, "b", "1", 0); return nil })
		second <- err
	}()
	waitQueued(t, b, 1)
	close(releaseFirst)
	<-secondAt
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first caller is still draining the queue behind its own call")
	}
	close(releaseSecond)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// RunScript answers as script.Run does: a server without the script gets
// it loaded by the call that found it missing; a script's error, a nil
// reply and a call that gave up in the queue each come back as the reply's
// error (the last without reading what a drainer may still be filling).
func TestRunScript(t *testing.T) {
	rdb := client(t)
	b := New(rdb, Config{MaxInFlight: 1})
	ctx := context.Background()
	incr := redis.NewScript(`return redis.call('INCR', KEYS[1])`)
	for want := int64(1); want <= 2; want++ {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := RunScript(ctx, b, rdb, incr, []string{"n"}).Int64(); err != nil || n != want {
			t.Fatalf("after SCRIPT FLUSH: %d %v, want %d", n, err, want)
		}
	}
	if n, err := RunScript(ctx, b, rdb, incr, []string{"n"}).Int64(); err != nil || n != 3 {
		t.Fatalf("loaded: %d %v", n, err)
	}
	failing := redis.NewScript(`return redis.error_reply('BUSTED here')`)
	if err := RunScript(ctx, b, rdb, failing, nil).Err(); err == nil || !strings.Contains(err.Error(), "BUSTED") {
		t.Fatalf("script error: %v", err)
	}
	nothing := redis.NewScript(`return nil`)
	if err := RunScript(ctx, b, rdb, nothing, nil).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("nil reply: %v, want redis.Nil", err)
	}

	g := newGate(b)
	go func() { _, _ = b.Pipelined(ctx, func(p redis.Pipeliner) error { p.Ping(ctx); return nil }) }()
	<-g.first
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- RunScript(cctx, b, rdb, incr, []string{"n"}).Err() }()
	waitQueued(t, b, 1)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("given up while queued: %v, want context.Canceled", err)
	}
	close(g.release)
}
