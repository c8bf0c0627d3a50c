// Package redisbus connects the services to Redis: the client (single node,
// Cluster or Sentinel from one URL), the per-user channel and key names, and
// the pub/sub bus that carries answers to whichever gateway holds the user.
package redisbus

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
)

// NewClient opens a client for REDIS_URL:
//
//	redis://[user:pass@]host:port/db             a single server (rediss:// for TLS)
//	redis+cluster://host:port?addr=host2:port2   a Redis Cluster (seed nodes)
//	redis+sentinel://host:port?master_name=m     Sentinel-managed failover
//
// Every form returns a redis.UniversalClient, so the code using it is the same
// whichever topology runs. Commands are traced with redisotel.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	base, topology, _ := strings.Cut(u.Scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("REDIS_URL: scheme %q is not redis, rediss, redis+cluster or redis+sentinel", u.Scheme)
	}
	plain := base + "://" + strings.TrimPrefix(rawURL, u.Scheme+"://")
	var c redis.UniversalClient
	switch topology {
	case "":
		o, err := redis.ParseURL(plain)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		c = redis.NewClient(o)
	case "cluster":
		o, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		c = redis.NewClusterClient(o)
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		c = redis.NewFailoverClient(o)
	default:
		return nil, fmt.Errorf("REDIS_URL: unknown topology %q (use cluster or sentinel)", topology)
	}
	// No statements (they would carry chat content into traces) and no
	// caller file:line: finding it walks the stack on every command, about
	// a tenth of the relay's CPU, to name one of a handful of call sites the
	// span's parent already names.
	if err := redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false)); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis tracing: %w", err)
	}
	return c, nil
}

// Ping checks that Redis answers, for readiness probes.
func Ping(ctx context.Context, c redis.UniversalClient) error {
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// UserChannel is the pub/sub channel of a user's live traffic. Every key of a
// user shares the {userid} hash tag, so on a Cluster they live on one slot.
func UserChannel(userID string) string { return "chat:{" + userID + "}:live" }

// UserFromChannel inverts UserChannel.
func UserFromChannel(ch string) (string, bool) {
	if !strings.HasPrefix(ch, "chat:{") || !strings.HasSuffix(ch, "}:live") {
		return "", false
	}
	return ch[len("chat:{") : len(ch)-len("}:live")], true
}
