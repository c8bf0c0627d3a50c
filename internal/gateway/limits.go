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

// MessageRate is the user's message rate across instances.
type MessageRate interface {
	Allow(ctx context.Context, userID string) (ratelimit.Result, error)
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

// TokenBudget is what the user may still spend on the model today.
type TokenBudget interface {
	Remaining(ctx context.Context, userID string) (int64, error)
}

// InstanceSlots bounds the sockets of this instance.
type InstanceSlots interface {
	TryAcquire() bool
	Release()
}

// limits are every limit the gateway applies.
type limits struct {
	Messages   MessageRate
	IPConnects ConnectRate
	Sockets    SocketSlots
	Tokens     TokenBudget
	Instance   InstanceSlots
}

func limitsOf(l *ratelimit.Limiters) limits {
	return limits{Messages: l.Messages, IPConnects: l.IPConnects, Sockets: l.Sockets, Tokens: l.Tokens, Instance: l.Instance}
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
// unmetered ones (counted in chat_ratelimit_errors_total).
func (g *Gateway) overLimit(ctx context.Context, userID string) (*protocol.Refusal, []any) {
	res, err := g.lim.Messages.Allow(ctx, userID)
	switch {
	case err != nil:
		g.m.limitErrors.WithLabelValues(ratelimit.LimitUserMessages).Inc()
	case !res.Allowed:
		g.m.limited.WithLabelValues(ratelimit.LimitUserMessages).Inc()
		return &protocol.FrameRateLimited, []any{retryAfter(res.RetryAfter)}
	}
	left, err := g.lim.Tokens.Remaining(ctx, userID)
	switch {
	case err != nil:
		g.m.limitErrors.WithLabelValues(ratelimit.LimitUserTokens).Inc()
	case left <= 0:
		g.m.limited.WithLabelValues(ratelimit.LimitUserTokens).Inc()
		return &protocol.FrameTokenBudget, nil
	}
	return nil, nil
}

// retryAfter is d in whole seconds, at least one (a Retry-After value).
func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(d, time.Second).Seconds())))
}
