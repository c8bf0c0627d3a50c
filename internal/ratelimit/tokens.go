package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/redisbatch"
	"github.com/chatrelay/chat/internal/rediskeys"
)

// DailyTokens counts the model tokens each user spends per UTC day, across
// every service that spends them. The day's counter is a plain integer key
// that expires an hour after its day ends.
type DailyTokens struct {
	rdb redis.UniversalClient
	// batch carries the scripts of concurrent calls (Reserve and Settle of
	// every user a consumer is answering) in shared pipelines.
	batch redisbatch.Pipeliner
	limit int64
	// Now is the clock (time.Now by default); tests set it.
	Now func() time.Time
}

// NewDailyTokens allows limit tokens per user per UTC day; 0 disables it.
func NewDailyTokens(rdb redis.UniversalClient, limit int64) *DailyTokens {
	return &DailyTokens{rdb: rdb, batch: redisbatch.New(rdb, redisbatch.Defaults), limit: limit, Now: time.Now}
}

// dayGrace keeps a finished day's counter a little longer, so a request
// that straddles midnight reads the same counter it wrote.
const dayGrace = time.Hour

// DailyTokensKey is userID's counter for the UTC day of t.
func DailyTokensKey(userID string, t time.Time) string {
	return rediskeys.DailyTokens(userID, t)
}

// addScript adds ARGV[1] (negative to give tokens back, never below 0) and
// makes sure the key expires (ARGV[2] s) even if an earlier call died
// between INCRBY and EXPIRE.
var addScript = redis.NewScript(`
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v < 0 then v = redis.call('INCRBY', KEYS[1], -v) end
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return v
`)

// Unlimited is what Remaining reports for a disabled limit.
const Unlimited = math.MaxInt64

// Spend records n tokens spent by userID today and returns what is left
// (0 when the budget is used up or overdrawn). Tokens already spent are
// always recorded: the check belongs before the work (Reserve, Remaining).
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
	used, err := d.add(ctx, userID, now, n, d.untilMidnight(now)+dayGrace)
	if err != nil {
		return 0, err
	}
	return max(d.limit-used, 0), nil
}

// Reservation is what one model call holds against its user's budget
// between Reserve and Settle.
type Reservation struct {
	UserID string
	// At is when it was made: it is settled on that UTC day's counter, so
	// a call that straddles midnight does not charge the new day.
	At time.Time
	// Tokens is how many it holds (0 when the budget is disabled).
	Tokens int64
}

// reserveScript adds ARGV[1] unless the counter would then pass ARGV[2]
// (returning -1), in one step, so that concurrent reservations of one user
// together stay within the limit.
var reserveScript = redis.NewScript(`
local n = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') + n > tonumber(ARGV[2]) then
  return -1
end
local v = redis.call('INCRBY', KEYS[1], n)
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return v
`)

// Reserve holds estimate tokens of userID's budget for a model call that is
// about to start; ok is false (and nothing is held) when the tokens used
// and held today plus estimate would pass the limit. An estimate above the
// whole limit holds the whole limit, so a long conversation can still be
// answered on a fresh day. Every reservation must be Settled.
//
// What the budget bounds, then: with at most one reservation of a user in
// flight (the ai-consumer handles one user's messages in order), the day's
// count ends at most one answer's tokens beyond its estimate over the limit
// (the last call allowed may use more than it reserved); k reservations in
// flight at once (two consumers during a partition hand-over) can pass it by
// what each of the k used beyond its estimate.
func (d *DailyTokens) Reserve(ctx context.Context, userID string, estimate int64) (r Reservation, ok bool, err error) {
	if d.limit <= 0 {
		return Reservation{}, true, nil
	}
	now := d.Now()
	n := min(max(estimate, 1), d.limit)
	ttl := int64((d.untilMidnight(now) + dayGrace) / time.Second)
	v, err := redisbatch.RunScript(ctx, d.batch, d.rdb, reserveScript, []string{DailyTokensKey(userID, now)}, n, d.limit, ttl).Int64()
	if err != nil {
		return Reservation{}, false, fmt.Errorf("daily tokens: reserve: %w", err)
	}
	if v < 0 {
		return Reservation{}, false, nil
	}
	return Reservation{UserID: userID, At: now, Tokens: n}, true, nil
}

// Settle replaces r by the tokens the call really used: 0 releases it (the
// call failed). A reservation whose day's counter has expired is dropped.
func (d *DailyTokens) Settle(ctx context.Context, r Reservation, used int64) error {
	if d.limit <= 0 || r.UserID == "" {
		return nil
	}
	if used < 0 {
		return errors.New("daily tokens: negative use")
	}
	left := d.untilMidnight(r.At) + dayGrace - d.Now().Sub(r.At)
	if used == r.Tokens || left < time.Second {
		return nil
	}
	if _, err := d.add(ctx, r.UserID, r.At, used-r.Tokens, left); err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	return nil
}

// add adds n (which may be negative) to userID's counter of the day of t,
// which lives ttl from now if it has no expiry yet.
func (d *DailyTokens) add(ctx context.Context, userID string, t time.Time, n int64, ttl time.Duration) (int64, error) {
	v, err := redisbatch.RunScript(ctx, d.batch, d.rdb, addScript, []string{DailyTokensKey(userID, t)}, n, int64(ttl/time.Second)).Int64()
	if err != nil {
		return 0, fmt.Errorf("daily tokens: %w", err)
	}
	return v, nil
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
