package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/gopool"
)

// ConsumerConfig configures a group consumer.
type ConsumerConfig struct {
	Client ClientConfig
	Group  string
	Topics []string
	// MaxInFlight bounds records handed out and not finished, across all
	// users; polling pauses at the bound, which is the backpressure.
	MaxInFlight int
	// DrainTimeout bounds how long shutdown and revocation wait for records
	// in flight before giving them up (they are then redelivered).
	DrainTimeout time.Duration
	// CommitInterval is how often marked offsets are committed.
	CommitInterval time.Duration
	// SessionTimeout is the group session timeout (0: franz-go's 45s).
	SessionTimeout time.Duration
	// FetchMinBytes and FetchMaxWait are how long a fetch may wait at the
	// broker for records to gather (config.KafkaFetch); 0: answered as
	// soon as a record is there, an idle fetch renewed every 50ms.
	FetchMinBytes int32
	FetchMaxWait  time.Duration
	// InstanceID, when set, makes the consumer a static group member
	// (KIP-345): after a crash, a restart with the same id takes the
	// partitions back without waiting for the session timeout. Run still
	// leaves the group when it ends (leave.go).
	InstanceID string
	// Fenced, when set, counts the times another member with the same
	// InstanceID took this one's place (NewFencedCounter).
	Fenced *prometheus.CounterVec
}

// Consumer reads a consumer group's topics and runs a Handler on each record.
//
// Records of one key (one user) are handled one at a time in offset order, in
// a lane of their own; different keys run concurrently. A partition's offset
// is marked for commit only up to the highest record below which every record
// is done, so nothing unfinished is ever committed.
type Consumer struct {
	cfg     ConsumerConfig
	cl      *kgo.Client
	handler Handler
	log     *slog.Logger

	slots chan struct{} // one token per record in flight

	// fencedMember is the member id that was fenced, until the group
	// gives this instance a new one (Fenced).
	fencedMember atomic.Pointer[string]
	// hookCl is cl for fenceHook, which runs on franz-go's goroutines,
	// started before NewClient returned cl.
	hookCl atomic.Pointer[kgo.Client]

	// work is the context handlers run in: it outlives Run's ctx by the
	// drain, so shutdown lets in-flight work finish; each partition's work
	// runs in a child of it that ends when the partition is forgotten.
	work     context.Context
	stopWork context.CancelFunc

	mu       sync.Mutex
	parts    map[topicPartition]*partState
	lanes    map[laneKey]*lane
	stopping bool
	lanesWG  sync.WaitGroup
	// workers run the lanes, keeping their grown stacks between them
	// (gopool); at most MaxInFlight lanes run at once.
	workers *gopool.Pool
}

type topicPartition struct {
	topic     string
	partition int32
}

type laneKey struct {
	tp  topicPartition
	key string
}

// partState is one assignment of a partition: a reassignment after a revoke
// gets a new one, so work queued under the old one is recognised as stale.
type partState struct {
	tracker  offsetTracker
	inflight int
	// revoked: queued records are skipped; in-flight ones may still finish
	// and be marked until forgotten.
	revoked   bool
	forgotten bool
	drained   chan struct{} // closed when a revoked partition has no work left
	// ctx is the partition's handlers' context, cancelled when the
	// partition is forgotten: a record still waiting (for the model, say)
	// once its partition is lost, or revoked past the drain, stops instead
	// of working beside the partition's new owner.
	ctx    context.Context
	cancel context.CancelFunc
}

type lane struct {
	queue []queued
}

type queued struct {
	rec *kgo.Record
	ps  *partState
}

// NewConsumer creates the client and joins no group until Run.
func NewConsumer(cfg ConsumerConfig, h Handler) (*Consumer, error) {
	if cfg.Group == "" || len(cfg.Topics) == 0 {
		return nil, errors.New("kafka consumer: group and topics are required")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	log := cfg.Client.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Consumer{
		cfg:     cfg,
		handler: h,
		log:     log,
		slots:   make(chan struct{}, cfg.MaxInFlight),
		parts:   map[topicPartition]*partState{},
		lanes:   map[laneKey]*lane{},
		workers: gopool.New(gopool.IdleTimeout),
	}
	c.work, c.stopWork = context.WithCancel(context.Background())
	cc := cfg.Client
	cc.Role = "consumer"
	if cfg.Fenced != nil {
		cfg.Fenced.WithLabelValues(cfg.Group) // a series at 0, for alerts on its increase
	}
	cl, err := NewClient(cc, c.groupOpts()...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	c.hookCl.Store(cl)
	return c, nil
}

// groupOpts are the client's consumer group options.
func (c *Consumer) groupOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		// Only records marked by finish() are ever committed, periodically
		// and on revoke and shutdown.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(c.cfg.CommitInterval),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(cmp.Or(c.cfg.FetchMaxWait, fetchMaxWait)),
		kgo.FetchMinBytes(max(c.cfg.FetchMinBytes, 1)),
		kgo.WithHooks(fenceHook{c}),
	}
	if st := c.cfg.SessionTimeout; st > 0 {
		opts = append(opts, kgo.SessionTimeout(st), kgo.HeartbeatInterval(max(st/10, 100*time.Millisecond)))
	}
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	return opts
}

// Client exposes the underlying client (for readiness checks and lag).
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run consumes until ctx ends, then finishes the records in flight (up to
// DrainTimeout), commits what is done and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	// Handlers get a context that outlives ctx by DrainTimeout, so shutdown
	// lets in-flight work finish instead of failing it.
	defer c.stopWork()

	c.poll(ctx)
	c.drain(c.stopWork)
	return c.close()
}

// poll hands out records until ctx ends or the client is closed.
func (c *Consumer) poll(ctx context.Context) {
	for {
		fetches := c.cl.PollRecords(ctx, c.cfg.MaxInFlight)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.WarnContext(ctx, "kafka fetch error", "topic", topic, "partition", p, "error", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			c.dispatch(ctx, r)
		})
	}
}

// drain lets the records in flight finish, for at most DrainTimeout; then
// it cancels them (they are redelivered).
func (c *Consumer) drain(cancelProc context.CancelFunc) {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	waited := make(chan struct{})
	go func() { c.lanesWG.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(c.cfg.DrainTimeout):
		c.log.Warn("kafka consumer: drain timed out; unfinished records will be redelivered", "group", c.cfg.Group)
		cancelProc()
		<-waited
	}
}

// close commits what finished, leaves the group and closes the client.
func (c *Consumer) close() error {
	commitCtx, cancel := context.WithTimeout(context.Background(), c.cfg.DrainTimeout)
	defer cancel()
	err := c.cl.CommitMarkedOffsets(commitCtx)
	if err != nil {
		err = fmt.Errorf("kafka consumer %s: final commit: %w", c.cfg.Group, err)
	}
	c.leave(commitCtx)
	// For a dynamic member Close leaves the group, which runs revoked()
	// once more (nothing left); a static member left in leave.
	c.cl.Close()
	return err
}

// dispatch hands r to its key's lane, waiting for a free slot first.
func (c *Consumer) dispatch(ctx context.Context, r *kgo.Record) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	tp := topicPartition{r.Topic, r.Partition}
	c.mu.Lock()
	ps := c.parts[tp]
	if ps == nil || ps.revoked || c.stopping {
		// The partition moved to another member: it will process r.
		c.mu.Unlock()
		<-c.slots
		return
	}
	ps.tracker.add(r)
	ps.inflight++
	k := laneKey{tp, string(r.Key)}
	l, running := c.lanes[k]
	if !running {
		l = &lane{}
		c.lanes[k] = l
	}
	l.queue = append(l.queue, queued{r, ps})
	c.mu.Unlock()
	if !running {
		c.lanesWG.Add(1)
		c.workers.Go(func() { c.runLane(k, l) })
	}
}

// runLane processes one key's records in order until its queue is empty.
func (c *Consumer) runLane(k laneKey, l *lane) {
	defer c.lanesWG.Done()
	failed := false
	for {
		c.mu.Lock()
		if len(l.queue) == 0 {
			delete(c.lanes, k)
			c.mu.Unlock()
			return
		}
		q := l.queue[0]
		l.queue[0] = queued{}
		l.queue = l.queue[1:]
		r, ps := q.rec, q.ps
		skip := failed || c.stopping || ps.revoked
		c.mu.Unlock()

		var err error
		if !skip {
			err = c.handler(ps.ctx, r)
			if err != nil {
				// Only shutdown makes a handler give up (retries and the DLQ
				// are inside it). Later records of this key must not run
				// before this one, so the lane stops; all are redelivered.
				failed = true
				if !errors.Is(err, context.Canceled) {
					c.log.ErrorContext(RecordContext(ps.ctx, r), "record left unfinished", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "error", err)
				}
			}
		}
		c.finish(ps, r, !skip && err == nil)
		<-c.slots
	}
}

// finish accounts r as no longer in flight and marks the partition's commit
// point when the finished prefix grew.
func (c *Consumer) finish(ps *partState, r *kgo.Record, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps.inflight--
	if ok && !ps.forgotten {
		if last := ps.tracker.finish(r); last != nil {
			c.cl.MarkCommitRecords(last)
		}
	}
	if ps.revoked && ps.inflight == 0 && ps.drained != nil {
		close(ps.drained)
		ps.drained = nil
	}
}

func (c *Consumer) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range assigned {
		for _, p := range ps {
			st := &partState{}
			st.ctx, st.cancel = context.WithCancel(c.work)
			c.parts[topicPartition{topic, p}] = st
		}
	}
	c.log.Info("kafka partitions assigned", "group", c.cfg.Group, "instance_id", c.cfg.InstanceID, "partitions", assigned)
}

// revoked waits (bounded) for the revoked partitions' work in flight, then
// commits what finished, so the next owner starts right after it.
func (c *Consumer) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	var waits []chan struct{}
	c.mu.Lock()
	for topic, ps := range revoked {
		for _, p := range ps {
			st := c.parts[topicPartition{topic, p}]
			if st == nil {
				continue
			}
			st.revoked = true
			if st.inflight > 0 {
				st.drained = make(chan struct{})
				waits = append(waits, st.drained)
			}
		}
	}
	c.mu.Unlock()
	deadline := time.After(c.cfg.DrainTimeout)
	for _, w := range waits {
		select {
		case <-w:
		case <-deadline:
			c.log.Warn("kafka revoke: in-flight records did not finish in time", "group", c.cfg.Group)
		}
	}
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.DrainTimeout)
	defer cancel()
	if err := cl.CommitMarkedOffsets(commitCtx); err != nil {
		c.log.Warn("kafka commit on revoke failed", "group", c.cfg.Group, "error", err)
	}
	c.forget(revoked)
	c.log.Info("kafka partitions revoked", "group", c.cfg.Group, "partitions", revoked)
}

// lost drops the state of partitions taken away without a clean revoke:
// their unfinished records will be redelivered to the new owner.
func (c *Consumer) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.forget(lost)
	c.log.Warn("kafka partitions lost", "group", c.cfg.Group, "partitions", lost)
}

func (c *Consumer) forget(m map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range m {
		for _, p := range ps {
			tp := topicPartition{topic, p}
			if st := c.parts[tp]; st != nil {
				st.revoked, st.forgotten = true, true
				st.cancel()
			}
			delete(c.parts, tp)
		}
	}
}

// fetchMaxWait bounds how long an idle fetch waits at the broker for new
// records when ConsumerConfig does not say (KAFKA_FETCH_MAX_WAIT's
// default). With a minimum of one byte the broker answers as soon as a
// record arrives, so this only paces the fetches of an idle consumer.
const fetchMaxWait = 50 * time.Millisecond
