package gateway

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// The limits the gateway applies, as the small interfaces it uses (the
// ratelimit package implements them on Redis; tests fake them).

// MessageLimits are the limits every message of a user meets: the user's
// message rate across instances and daily token budget, decided together.
type MessageLimits interface {
	Check(ctx context.Context, userID string) (ratelimit.Verdict, error)
}

// ConnectRate is the per-address rate of connection attempts.
type ConnectRate interface {
	Allow(ctx context.Context, addr string) (ratelimit.Result, error)
}

// SocketSlots bounds the sockets one user holds across instances.
type SocketSlots interface {
	Acquire(ctx context.Context, userID, connID string) (bool, error)
	Refresh(ctx context.Context, userID, connID string) (bool, error)
	Release(ctx context.Context, userID, connID string) error
}

// InstanceSlots bounds the sockets of this instance.
type InstanceSlots interface {
	TryAcquire() bool
	Release()
}

// limits are every limit the gateway applies.
type limits struct {
	Messages   MessageLimits
	IPConnects ConnectRate
	Sockets    SocketSlots
	Instance   InstanceSlots
}

func limitsOf(l *ratelimit.Limiters) limits {
	return limits{Messages: l.Messages, IPConnects: l.IPConnects, Sockets: l.Sockets, Instance: l.Instance}
}

// Label values of chat_gateway_limited_total the gateway counts itself.
const (
	limitFrameSize   = ratelimit.LimitFrameSize
	limitUserSockets = ratelimit.LimitUserSockets
	limitResumes     = ratelimit.LimitResumes
)

// overLimit checks the user's message rate (shared by every instance) and
// daily token budget. When Redis cannot answer, the message goes through:
// refusing every message during a Redis blip would hurt more than a few
// unmetered ones (counted in chat_ratelimit_errors_total, once for each
// limit left undecided).
func (g *Gateway) overLimit(ctx context.Context, userID string) (*protocol.Refusal, []any) {
	v, err := g.lim.Messages.Check(ctx, userID)
	if err != nil {
		for _, limit := range v.Unchecked {
			g.m.limitErrors.WithLabelValues(limit).Inc()
		}
		return nil, nil
	}
	switch v.Refused {
	case ratelimit.LimitUserMessages:
		g.m.limited.WithLabelValues(ratelimit.LimitUserMessages).Inc()
		return &protocol.FrameRateLimited, []any{retryAfter(v.RetryAfter)}
	case ratelimit.LimitUserTokens:
		g.m.limited.WithLabelValues(ratelimit.LimitUserTokens).Inc()
		return &protocol.FrameTokenBudget, nil
	}
	return nil, nil
}

// retryAfter is d in whole seconds, at least one (a Retry-After value).
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(d, time.Second).Seconds())))
}
