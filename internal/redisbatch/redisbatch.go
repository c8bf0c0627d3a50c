// Package redisbatch coalesces the Redis commands of concurrent callers into
// pipelines: the consumers' per-user lanes each make one small round trip
// per record (look up a stored answer, append and publish one), and under
// load most of a round trip's cost — two system calls on each side, a wake-
// up of each side — is per trip, not per command. A Batcher gives each
// caller the same call as go-redis' Pipelined, and sends what callers queue
// at about the same time in one pipeline.
//
// No caller waits for a batch to fill: a request goes out at once when
// fewer than MaxInFlight pipelines are in flight; only when that many are
// does it wait, with the others arriving meanwhile, for the next one. So an
// idle system pays nothing, and a busy one batches as much as it is busy
// (natural batching, as Kafka producers do).
//
// Order: each caller waits for its own commands' results, so a caller's
// commands are applied in the order it sends them; commands of different
// callers in one pipeline have no order but the queue's, which is what
// concurrent callers had without batching. A per-user lane is one caller at
// a time, so one user's writes stay in order.
package redisbatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/gopool"
	"github.com/chatrelay/chat/internal/telemetry"
)

// tracer makes one client span per pipeline, in the trace of the first
// caller it carries (redisbus leaves pipelines to it).
var tracer = otel.Tracer("github.com/chatrelay/chat/internal/redisbatch")

// Pipeliner is the one call the users of a Batcher need; a go-redis client
// has it too, so code written against it runs with or without batching.
type Pipeliner interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// Config bounds a Batcher.
type Config struct {
	// MaxInFlight is how many pipelines may be in flight at once (each
	// holds one pooled connection).
	MaxInFlight int
	// MaxBatch is the most callers one pipeline carries.
	MaxBatch int
	// Timeout bounds a pipeline whose callers' contexts have no deadline.
	Timeout time.Duration
}

// Defaults measured in docs/performance.md: four pipelines keep an idle
// system at one round trip per call, and batches above a few hundred
// commands gain nothing.
var Defaults = Config{MaxInFlight: 4, MaxBatch: 256, Timeout: 5 * time.Second}

// Batcher sends the commands of concurrent Pipelined calls in shared
// pipelines.
type Batcher struct {
	rdb redis.UniversalClient
	cfg Config

	// mu guards queue and running. Invariant: a request in queue is
	// executed by a running drainer — a request is queued under mu, a
	// drainer (the caller itself, drainFor) is started when fewer than
	// MaxInFlight run, and a drainer stops only when it finds queue empty
	// under mu or hands its slot, under mu, to a pooled drainer.
	mu      sync.Mutex
	queue   []*request
	running int

	// workers run the drainers; a drainer goes deep into go-redis, and a
	// fresh goroutine would grow its stack for each batch (gopool).
	workers *gopool.Pool

	// batchHook, when set (tests), sees each pipeline's callers before it
	// is sent.
	batchHook func(n int)
}

type request struct {
	ctx  context.Context
	fn   func(redis.Pipeliner) error
	cmds []redis.Cmder
	err  error
	done chan struct{}
}

// New returns a Batcher on rdb; zero fields of cfg take Defaults'.
func New(rdb redis.UniversalClient, cfg Config) *Batcher {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = Defaults.MaxInFlight
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = Defaults.MaxBatch
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = Defaults.Timeout
	}
	return &Batcher{rdb: rdb, cfg: cfg, workers: gopool.New(gopool.IdleTimeout)}
}

// Pipelined queues fn's commands for the next pipeline and returns them
// once it ran, with the first error among them (as go-redis' Pipelined
// does, redis.Nil included). It returns early with ctx's error if ctx ends
// while the call is queued; the commands may still run. A caller that found
// a pipeline slot free sends the pipeline itself (see drainFor) and returns
// when it is done, within Config.Timeout.
func (b *Batcher) Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	r := &request{ctx: ctx, fn: fn, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, r)
	start := b.running < b.cfg.MaxInFlight
	if start {
		b.running++
	}
	b.mu.Unlock()
	if start {
		b.drainFor(r)
	}
	select {
	case <-r.done:
		return r.cmds, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// drainFor is a drainer run by the caller of r itself: an idle system's
// call then costs no hand-off to another goroutine and back (with the
// hand-off, one call at a time cost 1.36–1.51× the client CPU of a direct
// call; docs/performance.md). Once r is answered the caller goes back to
// its own work: what is still queued goes to a pooled drainer, which takes
// over the caller's slot, so the invariant on queue holds. A pooled
// drainer is drainFor(nil): it runs until the queue is empty.
func (b *Batcher) drainFor(r *request) {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.cfg.MaxBatch)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		if r != nil && answered(r) {
			b.mu.Unlock()
			b.workers.Go(b.drain)
			return
		}
		batch := b.take(n)
		b.mu.Unlock()
		b.send(batch)
	}
}

// drain is a pooled drainer.
func (b *Batcher) drain() { b.drainFor(nil) }

func answered(r *request) bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// take removes the first n requests from the queue; b.mu is held.
func (b *Batcher) take(n int) []*request {
	batch := make([]*request, n)
	copy(batch, b.queue)
	// The rest moves to the front, so the queue's array does not grow
	// without bound behind a slice that only advances.
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch
}

// send runs one pipeline for batch and hands each caller its commands.
func (b *Batcher) send(batch []*request) {
	if b.batchHook != nil {
		b.batchHook(len(batch))
	}
	// The pipeline runs under the first live caller's context (its trace
	// gets the pipeline's span; the other callers' traces have their own
	// spans around the call), without its cancellation: the others'
	// commands must not fail because that caller gave up.
	ctx := context.Background()
	for _, r := range batch {
		if r.ctx.Err() == nil {
			ctx = context.WithoutCancel(r.ctx)
			break
		}
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	ctx, span := tracer.Start(ctx, "redis.pipeline", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	// Set after the start: a span with no other attribute takes it with one
	// allocation, where a start option costs three.
	telemetry.SetCorrelation(ctx, telemetry.CorrelationID(ctx))
	pipe := b.rdb.Pipeline()
	bounds := make([]int, len(batch)+1)
	for i, r := range batch {
		if r.ctx.Err() != nil { // gave up already: its commands are not sent
			bounds[i+1] = pipe.Len()
			continue
		}
		if err := r.fn(pipe); err != nil {
			r.err = err // as Pipelined: fn's error is returned; what it queued still runs
		}
		bounds[i+1] = pipe.Len()
	}
	cmds, err := pipe.Exec(ctx)
	span.SetAttributes(attribute.String("db.system.name", "redis"), attribute.Int("db.operation.batch.size", len(cmds)),
		attribute.Int("chat.batch.callers", len(batch)))
	if err != nil && !errors.Is(err, redis.Nil) {
		span.RecordError(err)
		span.SetStatus(codes.Error, "pipeline failed")
	}
	for i, r := range batch {
		if len(cmds) >= bounds[i+1] {
			r.cmds = cmds[bounds[i]:bounds[i+1]]
		}
		if r.err == nil {
			r.err = firstErr(r.cmds)
		}
		close(r.done)
	}
}

func firstErr(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// RunScript runs script by its digest in one of batch's pipelines, as
// script.Run does alone: a server that does not have it (restarted,
// flushed, a new replica, a failover) gets it loaded by the one call that
// found it missing, which then runs it alone on rdb. The reply's error is
// the command's, or the call's when it never ran (ctx ended while queued);
// a script that returns nil replies redis.Nil, as script.Run does.
func RunScript(ctx context.Context, batch Pipeliner, rdb redis.Scripter, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	_, err := batch.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = script.EvalSha(ctx, p, keys, args...)
		return nil
	})
	switch {
	case err == nil:
		return cmd
	case redis.HasErrorPrefix(err, "NOSCRIPT"):
		return script.Run(ctx, rdb, keys, args...)
	}
	// cmd is not read here: a call that gave up while queued returns before
	// its pipeline is built, and a drainer may be filling cmd meanwhile.
	failed := redis.NewCmd(ctx)
	failed.SetErr(err)
	return failed
}
