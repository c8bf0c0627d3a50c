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

	"github.com/chatrelay/chat/internal/envelope"
)

// Sink receives the envelopes published for its user. Deliver and Resync
// must not block: the hub calls them from its single receive loop.
type Sink interface {
	Deliver(e *envelope.Envelope)
	// Resync tells the sink that its user's channel was subscribed again
	// after the connection to Redis broke: whatever was published in
	// between was missed live and must be read from the history. It is
	// called before any message received on the new subscription.
	Resync()
}

// PubSub is the part of *redis.PubSub the hub uses (a seam for tests).
type PubSub interface {
	Subscribe(ctx context.Context, channels ...string) error
	Unsubscribe(ctx context.Context, channels ...string) error
	ReceiveTimeout(ctx context.Context, timeout time.Duration) (any, error)
	Ping(ctx context.Context, payload ...string) error
	Close() error
}

// Hub holds one pub/sub connection for the whole process and keeps a user's
// channel subscribed while at least one sink of that user is registered.
// One connection per instance keeps Redis's client count flat however many
// sockets the gateway holds. On a Redis Cluster the channels are sharded
// ones and the connection is one per master the users need (see
// shardedPubSub), which the hub drives as the one connection.
//
// Each channel has one owner, the hub, and a state machine (see chanState):
// at most one SUBSCRIBE or UNSUBSCRIBE per channel is on its way at a time,
// and the next one is sent only when Redis confirmed it (or the connection
// it was sent on is gone). So a late UNSUBSCRIBE can never undo a newer
// SUBSCRIBE: a sink that arrives while its channel is being unsubscribed
// waits for the unsubscription to be confirmed, then for a new
// subscription.
type Hub struct {
	ps  PubSub
	log *slog.Logger

	// sendMu serialises reconcile passes: the commands of one pass reach
	// the connection before those of the next, so the order of commands
	// on the wire is the order of the state changes that made them.
	sendMu sync.Mutex

	mu    sync.Mutex
	users map[string]*userSubs
	dirty map[string]struct{} // users whose channel may need a command

	// SubscribeTimeout bounds the wait for Redis to confirm a subscription.
	SubscribeTimeout time.Duration
	// OnInvalid is called for payloads that cannot be decoded.
	OnInvalid func(err error)
}

// chanState is where a user's channel stands with Redis.
//
//	idle ──SUBSCRIBE sent──▶ subscribing ──confirmed──▶ subscribed
//	  ▲                                                     │
//	  └──confirmed (or connection lost)── unsubscribing ◀───┘ UNSUBSCRIBE sent
//
// A command is sent only from idle (SUBSCRIBE, when sinks want it) and
// from subscribed (UNSUBSCRIBE, when none do). go-redis keeps its own list
// of channels, which it subscribes again on a new connection; it holds a
// channel exactly while the state is subscribing or subscribed.
type chanState uint8

const (
	idle chanState = iota
	subscribing
	subscribed
	unsubscribing
)

type userSubs struct {
	sinks map[Sink]struct{}
	state chanState
	// ready is closed when the state becomes subscribed; a new one is made
	// when it leaves subscribed. Sinks wait on it before they read the
	// history, so nothing published after the read is missed.
	ready chan struct{}
}

// NewHub prepares a hub on c; Run must be running for subscriptions to be
// confirmed and messages delivered. On a cluster client (Clustered) the user
// channels are sharded channels, subscribed with ClusterClient.SSubscribe
// on the master of each user's slot.
func NewHub(c redis.UniversalClient, log *slog.Logger) *Hub {
	if Clustered(c) {
		return newHub(newShardedPubSub(clusterRouter{c.(*redis.ClusterClient)}, log, defaultShardTiming), log)
	}
	return newHub(c.Subscribe(context.Background()), log)
}

func newHub(ps PubSub, log *slog.Logger) *Hub {
	return &Hub{
		ps: ps, log: log,
		users:            map[string]*userSubs{},
		dirty:            map[string]struct{}{},
		SubscribeTimeout: 5 * time.Second,
	}
}

// Subscribe registers sink for userID's channel and returns once Redis has
// confirmed the subscription, so nothing published after it returns is
// missed. The returned function unregisters the sink (once; later calls do
// nothing).
func (h *Hub) Subscribe(ctx context.Context, userID string, sink Sink) (func(), error) {
	h.mu.Lock()
	us, ok := h.users[userID]
	if !ok {
		us = &userSubs{sinks: map[Sink]struct{}{}, ready: make(chan struct{})}
		h.users[userID] = us
	}
	us.sinks[sink] = struct{}{}
	if us.state != subscribed {
		h.dirty[userID] = struct{}{}
	}
	ready := us.ready
	h.mu.Unlock()
	unsubscribe := sync.OnceFunc(func() { h.remove(userID, sink) })
	h.reconcile()

	t := time.NewTimer(h.SubscribeTimeout)
	defer t.Stop()
	select {
	case <-ready:
		return unsubscribe, nil
	case <-ctx.Done():
		unsubscribe()
		return nil, ctx.Err()
	case <-t.C:
		unsubscribe()
		return nil, errors.New("redis subscribe: not confirmed in time")
	}
}

func (h *Hub) remove(userID string, sink Sink) {
	h.mu.Lock()
	us, ok := h.users[userID]
	if ok {
		delete(us.sinks, sink)
		if len(us.sinks) == 0 {
			h.dirty[userID] = struct{}{}
		}
	}
	h.mu.Unlock()
	if ok {
		h.reconcile()
	}
}

// Users is the number of users with a live subscription.
func (h *Hub) Users() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, us := range h.users {
		if us.state == subscribed {
			n++
		}
	}
	return n
}

// reconcile sends the commands the dirty channels need, until none does.
func (h *Hub) reconcile() {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	for {
		subs, unsubs := h.commands()
		if len(subs) == 0 && len(unsubs) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if len(unsubs) > 0 {
			if err := h.ps.Unsubscribe(ctx, unsubs...); err != nil {
				h.log.Warn("redis unsubscribe failed", "channels", len(unsubs), "error", err)
				h.connectionLost()
			}
		}
		if len(subs) > 0 {
			// go-redis keeps the channels even if this write fails, and
			// subscribes them on its next connection: the confirmation
			// comes then.
			if err := h.ps.Subscribe(ctx, subs...); err != nil {
				h.log.Warn("redis subscribe failed; retried on reconnect", "channels", len(subs), "error", err)
				h.connectionLost()
			}
		}
		cancel()
	}
}

// commands moves each dirty channel on and returns the commands to send.
func (h *Hub) commands() (subs, unsubs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for userID := range h.dirty {
		delete(h.dirty, userID)
		us := h.users[userID]
		if us == nil {
			continue
		}
		want := len(us.sinks) > 0
		switch {
		case us.state == idle && want:
			us.state = subscribing
			subs = append(subs, UserChannel(userID))
		case us.state == idle:
			delete(h.users, userID)
		case us.state == subscribed && !want:
			us.state, us.ready = unsubscribing, make(chan struct{})
			unsubs = append(unsubs, UserChannel(userID))
		}
		// subscribing and unsubscribing wait for their confirmation,
		// which marks the user dirty again.
	}
	return subs, unsubs
}

// connectionLost is told that the pub/sub connection broke (a failed read
// or write; go-redis has already opened a new one, or will). Redis dropped
// every subscription of the old connection; go-redis subscribes its list
// again, which has no channel being unsubscribed: those are now idle.
func (h *Hub) connectionLost() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for userID, us := range h.users {
		if us.state == unsubscribing {
			us.state = idle
			h.dirty[userID] = struct{}{}
		}
	}
}

// Run receives from Redis until ctx ends, dispatching each message to the
// sinks of its user. Connection errors are retried: go-redis reconnects and
// subscribes again to every channel it knows.
func (h *Hub) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = h.ps.Close() })
	defer stop()
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval, retry.MaxInterval = 50*time.Millisecond, 5*time.Second
	for {
		msg, err := h.ps.ReceiveTimeout(ctx, 15*time.Second)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if isTimeout(err) {
				// Idle: a ping proves the connection is alive.
				if perr := h.ps.Ping(ctx); perr != nil && ctx.Err() == nil {
					h.log.Warn("redis pubsub ping failed", "error", perr)
					h.lost()
				}
				continue
			}
			if errors.Is(err, redis.ErrClosed) {
				return nil
			}
			wait := retry.NextBackOff()
			h.log.Warn("redis pubsub receive failed; reconnecting", "error", err, "retry_in", wait.String())
			h.lost()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		retry.Reset()
		switch m := msg.(type) {
		case *redis.Subscription:
			h.confirmed(m.Kind, m.Channel)
		case *redis.Message:
			h.dispatch(m)
		}
	}
}

// lost handles a broken connection seen by the receive loop.
func (h *Hub) lost() {
	h.connectionLost()
	h.reconcile()
}

// confirmed handles Redis's confirmation of a (un)subscription. Resyncs run
// here, on the receive loop, so every sink knows of a gap before the first
// message of the new subscription reaches it.
func (h *Hub) confirmed(kind, channel string) {
	userID, ok := UserFromChannel(channel)
	if !ok {
		return
	}
	var resync []Sink
	h.mu.Lock()
	us := h.users[userID]
	switch {
	case kind == "subscribe" && us == nil:
		// Subscribed in Redis with no one to want it: unsubscribe.
		h.users[userID] = &userSubs{sinks: map[Sink]struct{}{}, state: subscribed, ready: closedChan()}
		h.dirty[userID] = struct{}{}
	case kind == "subscribe" && us.state == subscribed:
		// go-redis subscribed again on a new connection: there may be a
		// gap.
		resync = sinksOf(us)
	case kind == "subscribe" && (us.state == subscribing || us.state == idle):
		us.state = subscribed
		close(us.ready)
		h.dirty[userID] = struct{}{} // the sinks may have left meanwhile
	case kind == "unsubscribe" && us != nil && us.state == unsubscribing:
		us.state = idle
		h.dirty[userID] = struct{}{} // sinks may have come meanwhile
	}
	// Anything else is the late confirmation of a command the state has
	// moved past (e.g. the UNSUBSCRIBE of a connection already lost).
	h.mu.Unlock()
	for _, s := range resync {
		s.Resync()
	}
	h.reconcile()
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func sinksOf(us *userSubs) []Sink {
	sinks := make([]Sink, 0, len(us.sinks))
	for s := range us.sinks {
		sinks = append(sinks, s)
	}
	return sinks
}

func (h *Hub) dispatch(m *redis.Message) {
	userID, ok := UserFromChannel(m.Channel)
	if !ok {
		return
	}
	e, err := envelope.Unmarshal([]byte(m.Payload))
	if err == nil && e.UserID != userID {
		err = fmt.Errorf("%w: payload for %q on another user's channel", envelope.ErrInvalid, e.UserID)
	}
	if err != nil {
		h.log.Error("dropping undecodable pubsub payload", "error", err)
		if h.OnInvalid != nil {
			h.OnInvalid(err)
		}
		return
	}
	h.mu.Lock()
	var sinks []Sink
	if us := h.users[userID]; us != nil {
		sinks = sinksOf(us)
	}
	h.mu.Unlock()
	for _, s := range sinks {
		s.Deliver(e)
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
