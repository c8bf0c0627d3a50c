package ratelimit

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/rediskeys"
)

// gcra is a redis_rate limiter with one Limit; a zero Rate disables it.
type gcra struct {
	lim   *redis_rate.Limiter
	limit redis_rate.Limit
}

func newGCRA(rdb redis.UniversalClient, perMinute, burst int) gcra {
	if burst <= 0 {
		burst = perMinute
	}
	return gcra{lim: redis_rate.NewLimiter(rdb), limit: redis_rate.Limit{Rate: perMinute, Burst: burst, Period: time.Minute}}
}

func (g gcra) allow(ctx context.Context, key string) (Result, error) {
	if g.limit.Rate <= 0 {
		return Result{Allowed: true, Remaining: -1}, nil
	}
	res, err := g.lim.Allow(ctx, key, g.limit)
	if err != nil {
		return Result{}, fmt.Errorf("rate limit: %w", err)
	}
	r := Result{Allowed: res.Allowed > 0, Remaining: res.Remaining}
	if !r.Allowed && res.RetryAfter > 0 {
		r.RetryAfter = res.RetryAfter
	}
	return r, nil
}

// IPConnects limits connection attempts per client address across all
// instances. IPv6 addresses count per /64 (one host usually owns a whole
// /64); IPv4-mapped IPv6 counts as the IPv4 address. Addresses in an
// exempt network (LIMIT_EXEMPT_NETWORKS, the networks nginx exempts too)
// are not limited.
type IPConnects struct {
	g          gcra
	exemptNets []netip.Prefix
}

// NewIPConnects allows perMinute attempts a minute per address, all of them
// at once if they come in a burst, and any number from the exempt networks.
// 0 disables the limit.
func NewIPConnects(rdb redis.UniversalClient, perMinute int, exempt ...netip.Prefix) *IPConnects {
	return &IPConnects{g: newGCRA(rdb, perMinute, perMinute), exemptNets: exempt}
}

// Allow takes one attempt from ip's allowance. ip is an address, with or
// without a port (echo's RealIP, r.RemoteAddr); what does not parse counts
// in one shared "invalid" bucket rather than escaping the limit. An exempt
// address is allowed without asking Redis (nothing to count).
func (l *IPConnects) Allow(ctx context.Context, ip string) (Result, error) {
	if l.exempt(ip) {
		return Result{Allowed: true, Remaining: -1}, nil
	}
	return l.g.allow(ctx, IPConnectsKey(ip))
}

// IPConnectsKey is the key of ip's bucket given to redis_rate.
func IPConnectsKey(ip string) string { return rediskeys.IPConnects(IPBucket(ip)) }

// IPBucket is the address a client is counted under.
func IPBucket(ip string) string {
	a, ok := clientAddr(ip)
	if !ok {
		return "invalid"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
