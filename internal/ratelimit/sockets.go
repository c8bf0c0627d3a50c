package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/rediskeys"
)

// UserSockets bounds the sockets one user holds across all instances. Each
// socket is a member (its connID) of the user's sorted set scored with its
// expiry in Redis server milliseconds; a socket whose instance crashed stops
// being refreshed and expires after the TTL, so its slot comes back by
// itself.
type UserSockets struct {
	rdb   redis.UniversalClient
	limit int
	ttl   time.Duration
}

// NewUserSockets allows limit sockets per user, each slot living ttl after
// its last Acquire or Refresh. limit 0 disables the limit.
func NewUserSockets(rdb redis.UniversalClient, limit int, ttl time.Duration) *UserSockets {
	return &UserSockets{rdb: rdb, limit: limit, ttl: ttl}
}

// UserSocketsKey is the sorted set of userID's sockets.
func UserSocketsKey(userID string) string { return rediskeys.UserSockets(userID) }

// acquireScript removes expired members, then (re)adds ARGV[3] if it is
// already a member or the set holds fewer than ARGV[1]. The clock is the
// Redis server's, so instances with skewed clocks agree on expiry.
//
//	KEYS[1] the set; ARGV[1] limit, ARGV[2] ttl ms, ARGV[3] connID
//	returns {1 if held, members after the call}
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if not held and n >= tonumber(ARGV[1]) then
  return {0, n}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
if not held then n = n + 1 end
return {1, n}
`)

// Acquire takes a slot for connID (unique per socket, e.g. instance id +
// a counter or ids.New()). ok is false when the user already holds the
// limit. Acquiring a slot already held refreshes it.
func (s *UserSockets) Acquire(ctx context.Context, userID, connID string) (bool, error) {
	if s.limit <= 0 {
		return true, nil
	}
	return s.run(ctx, userID, connID)
}

// Refresh extends connID's slot by the TTL; call it well within the TTL
// (e.g. on every WebSocket ping). ok is false when the slot had expired
// (the instance was cut off from Redis for longer than the TTL) and the
// user's other sockets have taken it meanwhile: the socket should close.
func (s *UserSockets) Refresh(ctx context.Context, userID, connID string) (bool, error) {
	if s.limit <= 0 {
		return true, nil
	}
	return s.run(ctx, userID, connID)
}

func (s *UserSockets) run(ctx context.Context, userID, connID string) (bool, error) {
	ttl := max(s.ttl.Milliseconds(), 1)
	v, err := acquireScript.Run(ctx, s.rdb, []string{UserSocketsKey(userID)}, s.limit, ttl, connID).Int64Slice()
	if err != nil {
		return false, fmt.Errorf("user sockets: %w", err)
	}
	return len(v) == 2 && v[0] == 1, nil
}

// Release gives connID's slot back; call it when the socket closes.
func (s *UserSockets) Release(ctx context.Context, userID, connID string) error {
	if s.limit <= 0 {
		return nil
	}
	if err := s.rdb.ZRem(ctx, UserSocketsKey(userID), connID).Err(); err != nil {
		return fmt.Errorf("user sockets: %w", err)
	}
	return nil
}

// countScript counts the live members without changing anything but the
// expired ones.
var countScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
`)

// Count is the number of live sockets userID holds across instances.
func (s *UserSockets) Count(ctx context.Context, userID string) (int, error) {
	n, err := countScript.Run(ctx, s.rdb, []string{UserSocketsKey(userID)}).Int()
	if err != nil {
		return 0, fmt.Errorf("user sockets: %w", err)
	}
	return n, nil
}

// InstanceSockets bounds the sockets of this process (LIMIT_INSTANCE_SOCKETS);
// a full instance refuses with close 1013 so the client retries, and nginx
// sends it to another instance.
type InstanceSockets struct {
	limit int64
	inUse atomic.Int64
}

// NewInstanceSockets allows limit sockets at once; 0 disables the limit
// (InUse still counts).
func NewInstanceSockets(limit int) *InstanceSockets { return &InstanceSockets{limit: int64(limit)} }

// TryAcquire takes a slot; false when the instance is full. Every true must
// be matched by one Release.
func (s *InstanceSockets) TryAcquire() bool {
	n := s.inUse.Add(1)
	if s.limit > 0 && n > s.limit {
		s.inUse.Add(-1)
		return false
	}
	return true
}

// Release gives a slot back.
func (s *InstanceSockets) Release() { s.inUse.Add(-1) }

// InUse is the number of slots taken.
func (s *InstanceSockets) InUse() int { return int(s.inUse.Load()) }
