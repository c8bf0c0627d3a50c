package gopool

import (
	"sync"
	"testing"
	"time"
)

// A task given while a worker is idle runs on that worker, not a new one;
// tasks given while every worker is busy start new ones, so no task waits.
func TestIdleWorkersAreReusedAndBusyOnesNeverWaitedFor(t *testing.T) {
	p := New(time.Minute)
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	waitWorkers(t, p, 1)
	// Once the worker is idle, the next task runs on it.
	for range 5 {
		ran := make(chan struct{})
		handToIdle(t, p, func() { close(ran) })
		<-ran
	}
	if n := p.Workers(); n != 1 {
		t.Fatalf("%d workers after sequential tasks, want 1", n)
	}

	// Three tasks that block each other out: each needs its own worker.
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(3)
	for range 3 {
		p.Go(func() { started.Done(); <-release })
	}
	started.Wait() // would hang if a task waited for a busy worker
	close(release)
	if n := p.Workers(); n < 3 {
		t.Fatalf("%d workers for three concurrent tasks", n)
	}
}

// Idle workers exit after the idle timeout: an idle process holds none.
func TestIdleWorkersExit(t *testing.T) {
	p := New(20 * time.Millisecond)
	var wg sync.WaitGroup
	wg.Add(4)
	for range 4 {
		p.Go(wg.Done)
	}
	wg.Wait()
	waitWorkers(t, p, 0)
}

func waitWorkers(t *testing.T, p *Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Workers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers, want %d", p.Workers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// handToIdle gives task the way Go does once the one worker is idle
// again (it may still be on its way back from the last task).
func handToIdle(t *testing.T, p *Pool, task func()) {
	t.Helper()
	for range 1000 {
		select {
		case p.work <- task:
			return
		default:
			time.Sleep(time.Millisecond)
		}
	}
	t.Fatal("the worker never became idle")
}

// deep stands for a task that goes deep (a handler chain, tracing, a
// client library): it needs some 16 KiB of stack.
//
//go:noinline
func deep(n int) byte {
	var buf [512]byte
	buf[n%512] = byte(n)
	if n == 0 {
		return buf[0]
	}
	return deep(n-1) + buf[(n*7)%512]
}

// BenchmarkDeepTask: a task needing a grown stack, on a fresh goroutine
// each time ("go") or on a pool worker that kept its stack ("pool").
func BenchmarkDeepTask(b *testing.B) {
	var sink byte
	var mu sync.Mutex
	task := func(wg *sync.WaitGroup) func() {
		return func() {
			v := deep(30)
			mu.Lock()
			sink += v
			mu.Unlock()
			wg.Done()
		}
	}
	b.Run("go", func(b *testing.B) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		for b.Loop() {
			wg.Add(1)
			go task(&wg)()
			wg.Wait()
		}
	})
	b.Run("pool", func(b *testing.B) {
		b.ReportAllocs()
		p := New(time.Minute)
		var wg sync.WaitGroup
		for b.Loop() {
			wg.Add(1)
			p.Go(task(&wg))
			wg.Wait()
		}
	})
	_ = sink
}

// After a burst, at most MaxIdle workers stay to wait for more.
func TestABurstLeavesAtMostMaxIdleWaiting(t *testing.T) {
	p := New(time.Minute)
	release := make(chan struct{})
	var wg sync.WaitGroup
	const burst = MaxIdle * 3
	wg.Add(burst)
	for range burst {
		p.Go(func() { <-release; wg.Done() })
	}
	close(release)
	wg.Wait()
	waitWorkers(t, p, MaxIdle)
}
