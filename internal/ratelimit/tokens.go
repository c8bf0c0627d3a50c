package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/rediskeys"
)

// DailyTokens counts the model tokens each user spends per UTC day, across
// every service that spends them. The day's counter is a plain integer key
// that expires an hour after its day ends.
type DailyTokens struct {
	rdb   redis.UniversalClient
	limit int64
	// Now is the clock (time.Now by default); tests set it.
	Now func() time.Time
}

// NewDailyTokens allows limit tokens per user per UTC day; 0 disables it.
func NewDailyTokens(rdb redis.UniversalClient, limit int64) *DailyTokens {
	return &DailyTokens{rdb: rdb, limit: limit, Now: time.Now}
}

// dayGrace keeps a finished day's counter a little longer, so a request
// that straddles midnight reads the same counter it wrote.
const dayGrace = time.Hour

// DailyTokensKey is userID's counter for the UTC day of t.
func DailyTokensKey(userID string, t time.Time) string {
	return rediskeys.DailyTokens(userID, t)
}

// spendScript adds ARGV[1] and makes sure the key expires (ARGV[2] s) even
// if an earlier call died between INCRBY and EXPIRE.
var spendScript = redis.NewScript(`
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return v
`)

// Unlimited is what Remaining reports for a disabled limit.
const Unlimited = math.MaxInt64

// Spend records n tokens spent by userID today and returns what is left
// (0 when the budget is used up or overdrawn). Tokens already spent are
// always recorded: the check belongs before the work (Remaining).
func (d *DailyTokens) Spend(ctx context.Context, userID string, n int64) (int64, error) {
	if d.limit <= 0 {
		return Unlimited, nil
	}
	if n < 0 {
		return 0, errors.New("daily tokens: negative spend")
	}
	if n == 0 {
		return d.Remaining(ctx, userID)
	}
	now := d.Now()
	ttl := int64((d.untilMidnight(now) + dayGrace) / time.Second)
	used, err := spendScript.Run(ctx, d.rdb, []string{DailyTokensKey(userID, now)}, n, ttl).Int64()
	if err != nil {
		return 0, fmt.Errorf("daily tokens: %w", err)
	}
	return max(d.limit-used, 0), nil
}

// Remaining is what userID may still spend today (Unlimited when disabled).
func (d *DailyTokens) Remaining(ctx context.Context, userID string) (int64, error) {
	if d.limit <= 0 {
		return Unlimited, nil
	}
	used, err := d.rdb.Get(ctx, DailyTokensKey(userID, d.Now())).Int64()
	if errors.Is(err, redis.Nil) {
		return d.limit, nil
	}
	if err != nil {
		return 0, fmt.Errorf("daily tokens: %w", err)
	}
	return max(d.limit-used, 0), nil
}

// ResetIn is how long until the budgets renew (the next UTC midnight).
func (d *DailyTokens) ResetIn() time.Duration { return d.untilMidnight(d.Now()) }

func (d *DailyTokens) untilMidnight(now time.Time) time.Duration {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	return next.Sub(now)
}
