package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/redis/go-redis/v9"
)

// Clustered reports whether c is a Redis Cluster client: the one place
// that decides what differs on a cluster. There user channels are sharded
// channels (SSUBSCRIBE/SPUBLISH), so a user's answers travel only within
// the shard that owns the user's slot ({userid} hash tag) instead of being
// broadcast to every node over the cluster bus, and the relay waits for a
// replica to hold an answer before it commits it (history.Config). A single
// node and Sentinel keep classic pub/sub. NewClient makes a
// *redis.ClusterClient exactly for a redis+cluster:// URL.
func Clustered(c redis.UniversalClient) bool {
	_, ok := c.(*redis.ClusterClient)
	return ok
}

// PublishCommand is the command that publishes on a user channel of c:
// SPUBLISH on a cluster, PUBLISH elsewhere (see Clustered).
func PublishCommand(c redis.UniversalClient) string {
	if Clustered(c) {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// nodePubSub is the part of a go-redis sharded *redis.PubSub the hub uses on
// one cluster node (a seam for tests).
type nodePubSub interface {
	SSubscribe(ctx context.Context, channels ...string) error
	SUnsubscribe(ctx context.Context, channels ...string) error
	ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error)
	Ping(ctx context.Context, payload ...string) error
	Close() error
}

// shardRouter is what the sharded pub/sub needs of the cluster client (a
// seam for tests).
type shardRouter interface {
	// Owner is the address of the master serving channel's slot, as the
	// client's view of the cluster says.
	Owner(ctx context.Context, channel string) (string, error)
	// Open returns a sharded pub/sub without a connection: its first
	// SSubscribe connects to the master of that channel's slot.
	Open() nodePubSub
	// Reload asks for a fresh view of the cluster (slots moved).
	Reload(ctx context.Context)
}

// clusterRouter is the shardRouter of a go-redis cluster client.
type clusterRouter struct{ c *redis.ClusterClient }

func (r clusterRouter) Owner(ctx context.Context, channel string) (string, error) {
	m, err := r.c.MasterForKey(ctx, channel)
	if err != nil {
		return "", fmt.Errorf("redis cluster: master for %s: %w", channel, err)
	}
	return m.Options().Addr, nil
}

// Open uses ClusterClient.SSubscribe, which routes the connection by the
// slot of the first channel subscribed on it.
func (r clusterRouter) Open() nodePubSub           { return r.c.SSubscribe(context.Background()) }
func (r clusterRouter) Reload(ctx context.Context) { r.c.ReloadState(ctx) }

// shardedPubSub is the hub's PubSub on a Redis Cluster: one go-redis sharded
// pub/sub connection per master that serves a subscribed user's slot,
// presented to the hub as the one connection it drives on a single node.
// The hub keeps owning each channel's state machine; this type only routes
// commands to the right node and turns what each node's connection does
// into what the hub expects of go-redis' classic PubSub:
//
//   - SUBSCRIBE/UNSUBSCRIBE become SSUBSCRIBE/SUNSUBSCRIBE on the
//     connection of the channel's master, one channel per command (Redis
//     refuses a command whose shard channels span slots).
//   - Each connection's replies reach the hub through one queue, in the
//     order the connection delivered them, ssubscribe/sunsubscribe
//     confirmations renamed subscribe/unsubscribe.
//   - When a connection fails (its node died, a read or write failed, or
//     Redis answered an error such as MOVED), every channel that connection
//     held is subscribed again on the master that serves it now — retried
//     with backoff while the cluster fails over — and each SUNSUBSCRIBE
//     still waiting on it is confirmed to the hub (the connection is gone,
//     so the channel is unsubscribed). The hub gets no error: one would
//     make its receive loop back off, and with it every other shard's
//     messages, for each refused retry of a failover. The new confirmation
//     reaches the hub as "subscribe" for a channel it holds subscribed,
//     which is how it learns of a reconnect: its sinks resync from the
//     history, exactly as after a classic reconnect.
//   - When Redis itself drops a channel (it sends an unasked sunsubscribe
//     when the slot moved to another node, by migration or failover of a
//     live master), that channel alone is subscribed again where its slot
//     now lives, with the same resync.
//
// go-redis' own reconnect of a sharded PubSub is never relied on: it
// subscribes all of a connection's channels in one SSUBSCRIBE, which Redis
// refuses (CROSSSLOT) when they span slots, and it routes by an arbitrary
// one of them. A connection that errs once is closed and replaced.
//
// Invariants (mu):
//   - owner[ch] is the live connection ch is subscribed (or being
//     subscribed) on, and ch ∈ owner[ch].chans; ch ∈ orphans when the hub
//     wants ch subscribed but no connection holds it. A channel the hub
//     wants is in exactly one of the two; one it does not want is in
//     neither.
//   - conns holds the live connections by node address; a dead one is in
//     no map, and nothing it reads reaches the hub.
//   - unsubs[ch] counts SUNSUBSCRIBEs sent on a connection and not yet
//     confirmed, so a confirmation is told from Redis dropping a channel
//     on its own.
//
// sendMu serialises the commands (the hub's reconcile passes and the
// resubscription of orphans), so the commands of one channel reach a
// connection in the order their state changes were made. Lock order:
// sendMu, then mu; no network I/O under mu.
type shardedPubSub struct {
	router shardRouter
	log    *slog.Logger
	q      *eventQueue

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	kick   chan struct{} // wakes the resubscriber

	sendMu sync.Mutex

	mu      sync.Mutex
	conns   map[string]*shardConn
	owner   map[string]*shardConn
	orphans map[string]struct{}
	closed  bool

	timing shardTiming
}

// shardTiming are the sharded pub/sub's timings.
type shardTiming struct {
	// readTimeout is how long a connection may be silent before it is
	// pinged; a second silence with the ping unanswered fails it.
	readTimeout time.Duration
	// retryMin, retryMax bound the backoff of resubscribing orphans.
	retryMin, retryMax time.Duration
}

// defaultShardTiming: a silent connection is checked as the hub checks a
// classic one (a ping after 15 s); orphans are retried from 100 ms to
// every 2 s, so a channel is back within 2 s of its master's promotion.
var defaultShardTiming = shardTiming{readTimeout: 15 * time.Second, retryMin: 100 * time.Millisecond, retryMax: 2 * time.Second}

// shardConn is one node's connection.
type shardConn struct {
	addr   string
	ps     nodePubSub
	chans  map[string]struct{}
	unsubs map[string]int
	dead   bool
	reader bool // its receive loop runs (started after its first SSUBSCRIBE)
}

func newShardedPubSub(router shardRouter, log *slog.Logger, timing shardTiming) *shardedPubSub {
	ctx, cancel := context.WithCancel(context.Background())
	s := &shardedPubSub{
		router: router, log: log, q: newEventQueue(),
		ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		conns: map[string]*shardConn{}, owner: map[string]*shardConn{}, orphans: map[string]struct{}{},
		timing: timing,
	}
	go s.resubscriber()
	return s
}

// Subscribe sends SSUBSCRIBE for each channel on its master's connection.
// A channel that cannot be sent now stays wanted and is retried; the error
// tells the hub (which then waits for the confirmation, as on a classic
// connection that is reconnecting).
func (s *shardedPubSub) Subscribe(ctx context.Context, channels ...string) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.subscribeAllLocked(ctx, channels)
}

// subscribeAllLocked subscribes each channel; once a node failed in this
// pass, its other channels wait for the resubscriber instead of each
// waiting for a connection that will not come. Called with sendMu held.
func (s *shardedPubSub) subscribeAllLocked(ctx context.Context, channels []string) error {
	var errs []error
	bad := map[string]bool{}
	for _, ch := range channels {
		if err := s.subscribeLocked(ctx, ch, bad); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// subscribeLocked subscribes ch (wanted, held by no connection) on the
// connection of its master, unless that master is in bad. Called with
// sendMu held.
func (s *shardedPubSub) subscribeLocked(ctx context.Context, ch string, bad map[string]bool) error {
	addr, err := s.router.Owner(ctx, ch)
	if err == nil && bad[addr] {
		err = fmt.Errorf("redis ssubscribe: %s failed a moment ago", addr)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return redis.ErrClosed
	}
	delete(s.orphans, ch)
	if err != nil {
		s.orphans[ch] = struct{}{}
		s.mu.Unlock()
		s.wake()
		return err
	}
	c := s.conns[addr]
	if c == nil {
		c = &shardConn{addr: addr, ps: s.router.Open(), chans: map[string]struct{}{}, unsubs: map[string]int{}}
		s.conns[addr] = c
	}
	c.chans[ch] = struct{}{}
	s.owner[ch] = c
	startReader := !c.reader
	c.reader = true
	s.mu.Unlock()

	if err := c.ps.SSubscribe(ctx, ch); err != nil {
		bad[addr] = true
		s.fail(c, fmt.Errorf("redis ssubscribe on %s: %w", addr, err))
		return err
	}
	if startReader {
		go s.read(c)
	}
	return nil
}

// Unsubscribe sends SUNSUBSCRIBE for each channel on the connection that
// holds it; a channel no connection holds is unsubscribed already, and the
// hub gets its confirmation at once.
func (s *shardedPubSub) Unsubscribe(ctx context.Context, channels ...string) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	var errs []error
	for _, ch := range channels {
		s.mu.Lock()
		c := s.owner[ch]
		delete(s.owner, ch)
		delete(s.orphans, ch)
		if c != nil {
			delete(c.chans, ch)
			c.unsubs[ch]++
		} else {
			s.q.push(&redis.Subscription{Kind: "unsubscribe", Channel: ch})
		}
		s.mu.Unlock()
		if c == nil {
			continue
		}
		if err := c.ps.SUnsubscribe(ctx, ch); err != nil {
			s.fail(c, fmt.Errorf("redis sunsubscribe on %s: %w", c.addr, err))
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// read is one connection's receive loop.
func (s *shardedPubSub) read(c *shardConn) {
	pinged := false
	for {
		msg, err := c.ps.ReceiveTimeout(s.ctx, s.timing.readTimeout)
		if s.ctx.Err() != nil {
			return
		}
		if err != nil && isTimeout(err) && !pinged {
			pinged = true
			if perr := c.ps.Ping(s.ctx); perr != nil {
				s.fail(c, fmt.Errorf("redis pubsub ping on %s: %w", c.addr, perr))
				return
			}
			continue
		}
		if err != nil {
			s.fail(c, fmt.Errorf("redis pubsub receive on %s: %w", c.addr, err))
			return
		}
		pinged = false
		if !s.handle(c, msg) {
			return
		}
	}
}

// handle passes what connection c received on to the hub; false when c is
// dead. It queues under mu, so what the hub receives is ordered with the
// state changes here (nothing of a connection already failed follows the
// resubscription that replaced it).
func (s *shardedPubSub) handle(c *shardConn, msg any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.dead {
		return false
	}
	switch m := msg.(type) {
	case *redis.Message:
		s.q.push(m)
	case *redis.Subscription:
		switch m.Kind {
		case "ssubscribe":
			if s.owner[m.Channel] == c {
				s.q.push(&redis.Subscription{Kind: "subscribe", Channel: m.Channel, Count: m.Count})
			}
		case "sunsubscribe":
			switch {
			case c.unsubs[m.Channel] > 0:
				if c.unsubs[m.Channel]--; c.unsubs[m.Channel] == 0 {
					delete(c.unsubs, m.Channel)
				}
				s.q.push(&redis.Subscription{Kind: "unsubscribe", Channel: m.Channel, Count: m.Count})
			case s.owner[m.Channel] == c:
				// Redis dropped the channel: its slot moved to another
				// node. Subscribe it again where it lives now.
				delete(c.chans, m.Channel)
				delete(s.owner, m.Channel)
				s.orphans[m.Channel] = struct{}{}
				s.log.Info("redis dropped a shard channel (its slot moved); subscribing it again", "node", c.addr)
				s.router.Reload(s.ctx)
				s.wake()
			}
		}
	}
	return true
}

// fail closes connection c: each channel it held is wanted still and is
// subscribed again on the master that serves it now, and each
// unsubscription waiting on c is confirmed (Redis will not confirm it).
func (s *shardedPubSub) fail(c *shardConn, err error) {
	s.mu.Lock()
	if c.dead || s.closed {
		s.mu.Unlock()
		return
	}
	c.dead = true
	if s.conns[c.addr] == c {
		delete(s.conns, c.addr)
	}
	for ch := range c.chans {
		delete(s.owner, ch)
		s.orphans[ch] = struct{}{}
	}
	n := len(c.chans)
	for ch, k := range c.unsubs {
		for range k {
			s.q.push(&redis.Subscription{Kind: "unsubscribe", Channel: ch})
		}
	}
	s.mu.Unlock()
	_ = c.ps.Close()
	s.log.Warn("redis shard pubsub connection failed; subscribing its channels again", "node", c.addr, "channels", n, "error", err)
	s.router.Reload(s.ctx)
	s.wake()
}

func (s *shardedPubSub) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// resubscriber subscribes orphaned channels again, with backoff while the
// cluster has no master for them (a failover takes seconds).
func (s *shardedPubSub) resubscriber() {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = s.timing.retryMin, s.timing.retryMax
	var retry <-chan time.Time
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		case <-retry:
		}
		retry = nil
		s.mu.Lock()
		orphans := make([]string, 0, len(s.orphans))
		for ch := range s.orphans {
			orphans = append(orphans, ch)
		}
		s.mu.Unlock()
		if len(orphans) == 0 {
			b.Reset()
			continue
		}
		s.sendMu.Lock()
		failed := 0
		bad := map[string]bool{}
		for _, ch := range orphans {
			s.mu.Lock()
			_, still := s.orphans[ch] // the hub may have unsubscribed it meanwhile
			s.mu.Unlock()
			if !still {
				continue
			}
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			if err := s.subscribeLocked(ctx, ch, bad); err != nil {
				failed++
			}
			cancel()
		}
		s.sendMu.Unlock()
		if failed > 0 {
			retry = time.After(b.NextBackOff())
		} else {
			b.Reset()
		}
		// Drain a kick the failures above made: the timer retries them.
		select {
		case <-s.kick:
			if failed == 0 {
				s.wake()
			}
		default:
		}
	}
}

// ReceiveTimeout returns the next reply of any connection, in each
// connection's order.
func (s *shardedPubSub) ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error) {
	return s.q.pop(ctx, s.ctx, timeout)
}

// Ping does nothing: each connection's receive loop pings it when silent.
func (s *shardedPubSub) Ping(context.Context, ...string) error { return nil }

// Close closes every connection and stops the resubscriber.
func (s *shardedPubSub) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*shardConn, 0, len(s.conns))
	for _, c := range s.conns {
		c.dead = true
		conns = append(conns, c)
	}
	s.conns = map[string]*shardConn{}
	s.mu.Unlock()
	s.cancel()
	for _, c := range conns {
		_ = c.ps.Close()
	}
	return nil
}

// eventQueue is the hub's single receive queue: unbounded, so a
// connection's receive loop, and an Unsubscribe answering for a channel no
// connection holds, never block on the hub (which may itself be sending a
// command).
type eventQueue struct {
	mu     sync.Mutex
	items  []any
	notify chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{notify: make(chan struct{}, 1)} }

func (q *eventQueue) push(v any) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *eventQueue) pop(ctx, life context.Context, timeout time.Duration) (any, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			v := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			if err, ok := v.(error); ok {
				return nil, err
			}
			return v, nil
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-life.Done():
			return nil, redis.ErrClosed
		case <-t.C:
			return nil, queueTimeout{}
		}
	}
}

// queueTimeout is the error of a receive that found nothing in time (a
// net.Error-like Timeout, as the hub's isTimeout expects).
type queueTimeout struct{}

func (queueTimeout) Error() string { return "redis pubsub: no message in time" }
func (queueTimeout) Timeout() bool { return true }
