package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
)

// Sink receives the envelopes published for its user. Deliver and Resync
// must not block: the hub calls them from its single receive loop.
type Sink interface {
	Deliver(e *envelope.Envelope)
	// Resync tells the sink that its user's channel was subscribed again
	// after the connection to Redis broke: whatever was published in
	// between was missed live and must be read from the history.
	Resync()
}

// Hub holds one pub/sub connection for the whole process and subscribes to a
// user's channel while at least one sink of that user is registered. One
// connection per instance keeps Redis's client count flat however many
// sockets the gateway holds.
type Hub struct {
	ps  *redis.PubSub
	log *slog.Logger

	mu    sync.Mutex
	users map[string]*userSubs
	// SubscribeTimeout bounds the wait for Redis to confirm a subscription.
	SubscribeTimeout time.Duration
	// OnInvalid is called for payloads that cannot be decoded.
	OnInvalid func(err error)
}

type userSubs struct {
	sinks     map[Sink]struct{}
	confirmed chan struct{} // closed when Redis confirmed the subscription
}

// NewHub prepares a hub on c; Run must be running for subscriptions to be
// confirmed and messages delivered.
func NewHub(c redis.UniversalClient, log *slog.Logger) *Hub {
	return &Hub{
		ps:               c.Subscribe(context.Background()),
		log:              log,
		users:            map[string]*userSubs{},
		SubscribeTimeout: 5 * time.Second,
	}
}

// Subscribe registers sink for userID's channel and returns once Redis has
// confirmed the subscription, so nothing published after it returns is
// missed. The returned function unregisters the sink.
func (h *Hub) Subscribe(ctx context.Context, userID string, sink Sink) (func(), error) {
	h.mu.Lock()
	us, ok := h.users[userID]
	if !ok {
		us = &userSubs{sinks: map[Sink]struct{}{}, confirmed: make(chan struct{})}
		h.users[userID] = us
	}
	us.sinks[sink] = struct{}{}
	confirmed := us.confirmed
	h.mu.Unlock()

	unsubscribe := func() { h.remove(userID, sink) }
	if !ok {
		// go-redis remembers the channel even if this write fails, and
		// subscribes again when it reconnects.
		if err := h.ps.Subscribe(ctx, UserChannel(userID)); err != nil {
			unsubscribe()
			return nil, fmt.Errorf("redis subscribe: %w", err)
		}
	}
	t := time.NewTimer(h.SubscribeTimeout)
	defer t.Stop()
	select {
	case <-confirmed:
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
	if !ok {
		h.mu.Unlock()
		return
	}
	delete(us.sinks, sink)
	last := len(us.sinks) == 0
	if last {
		delete(h.users, userID)
	}
	h.mu.Unlock()
	if last {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.ps.Unsubscribe(ctx, UserChannel(userID)); err != nil {
			h.log.Warn("redis unsubscribe failed", "error", err)
		}
	}
}

// Users is the number of users with a live subscription.
func (h *Hub) Users() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.users)
}

// Run receives from Redis until ctx ends, dispatching each message to the
// sinks of its user. Connection errors are retried: go-redis reconnects and
// subscribes again to every channel it knows.
func (h *Hub) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = h.ps.Close() })
	defer stop()
	backoff := 50 * time.Millisecond
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
				}
				continue
			}
			if errors.Is(err, redis.ErrClosed) {
				return nil
			}
			h.log.Warn("redis pubsub receive failed; reconnecting", "error", err, "retry_in", backoff.String())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				h.confirm(m.Channel)
			}
		case *redis.Message:
			h.dispatch(m)
		}
	}
}

func (h *Hub) confirm(channel string) {
	userID, ok := UserFromChannel(channel)
	if !ok {
		return
	}
	h.mu.Lock()
	us := h.users[userID]
	if us == nil {
		h.mu.Unlock()
		return
	}
	select {
	case <-us.confirmed:
		// Already confirmed once: this is go-redis subscribing again on a
		// new connection, so there may be a gap.
		sinks := make([]Sink, 0, len(us.sinks))
		for s := range us.sinks {
			sinks = append(sinks, s)
		}
		h.mu.Unlock()
		for _, s := range sinks {
			s.Resync()
		}
		return
	default:
		close(us.confirmed)
	}
	h.mu.Unlock()
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
	us := h.users[userID]
	var sinks []Sink
	if us != nil {
		sinks = make([]Sink, 0, len(us.sinks))
		for s := range us.sinks {
			sinks = append(sinks, s)
		}
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
