// Package gopool runs short tasks on goroutines that outlive them. A new
// goroutine starts with a small stack and grows it, copying, as the task
// goes deep — through a handler chain, tracing, a Redis or Kafka client —
// and the consumers start one per active user lane, the gateway one per
// burst of frames to a socket. In the profiles at 1,000 msg/s that growth
// (runtime.newstack, copystack) was 7–8% of the ai-consumer's and the
// gateways' CPU. A worker that waits for the next task keeps its grown
// stack; idle workers exit after IdleTimeout, so an idle process holds none.
package gopool

import (
	"sync/atomic"
	"time"
)

// IdleTimeout is how long a worker waits for another task before it exits.
const IdleTimeout = 10 * time.Second

// MaxIdle is how many workers may wait at once; one that finishes a task
// with that many waiting exits. A burst (10,000 sockets connecting, each
// written its ready frame) would otherwise leave thousands of workers with
// grown stacks waiting out IdleTimeout: 7.6 → 9.5 KiB per idle socket in
// the gateway before this bound. A steady load needs only about as many
// workers as tasks run at once.
const MaxIdle = 128

// Pool hands tasks to idle workers, starting a worker when none is idle.
// It never bounds the number of workers: its callers bound their tasks
// themselves (the consumers' in-flight records, one reader and one writer
// per socket).
type Pool struct {
	// work is unbuffered: a send succeeds only when an idle worker is
	// receiving, so a task never waits behind another one.
	work    chan func()
	workers atomic.Int64
	waiting atomic.Int64  // workers waiting for a task; at most MaxIdle
	idle    time.Duration // IdleTimeout unless a test sets it
}

// New returns a pool whose workers exit after idle of waiting.
func New(idle time.Duration) *Pool {
	if idle <= 0 {
		idle = IdleTimeout
	}
	return &Pool{work: make(chan func()), idle: idle}
}

// Go runs task on an idle worker, or on a new one; a nil Pool runs each
// task on a goroutine of its own.
func (p *Pool) Go(task func()) {
	if p == nil {
		go task()
		return
	}
	select {
	case p.work <- task:
	default:
		p.workers.Add(1)
		go p.worker(task)
	}
}

// Workers is how many workers are running or idle.
func (p *Pool) Workers() int { return int(p.workers.Load()) }

func (p *Pool) worker(task func()) {
	defer p.workers.Add(-1)
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		task()
		task = nil // not kept alive while waiting
		if p.waiting.Add(1) > MaxIdle {
			p.waiting.Add(-1)
			return
		}
		t.Reset(p.idle)
		select {
		case task = <-p.work:
			p.waiting.Add(-1)
		case <-t.C:
			p.waiting.Add(-1)
			return
		}
	}
}
