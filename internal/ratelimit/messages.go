package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/redisbatch"
	"github.com/chatrelay/chat/internal/rediskeys"
)

// UserMessages decides the two limits every message of a user meets at
// the gateway, across all instances:
//   - the user's message rate (RATE_USER_MESSAGES_PER_MIN, bursts of
//     RATE_USER_MESSAGES_BURST), a GCRA;
//   - the user's daily token budget (LIMIT_USER_TOKENS_PER_DAY), read, not
//     spent: the ai-consumer spends it (DailyTokens).
//
// One script decides both, sent through a redisbatch.Batcher: a message
// costs one round trip, shared with the other users' messages checked at
// about the same time. Checked one after the other (redis_rate's script,
// then a GET), unbatched, the limits cost the gateways 0.08–0.09 ms of CPU
// per message at 1,000 msg/s; in one script, 0.04–0.06 (docs/performance.md,
// "Throughput: the seventh round").
type UserMessages struct {
	rdb   redis.UniversalClient
	batch redisbatch.Pipeliner
	// burst, rate and period are the GCRA's arguments, formatted once
	// (rate "0": the rate is off).
	burst, rate, period string
	tokens              *DailyTokens // nil or disabled: no token check
	// checked names the enabled limits: what a failed check leaves undecided.
	checked []string
}

// NewUserMessages limits each user to perMinute messages a minute with
// bursts of burst (0: burst = perMinute), and refuses a user's messages
// once tokens' budget for the day is spent. perMinute 0 disables the rate,
// a nil or disabled tokens the budget.
func NewUserMessages(rdb redis.UniversalClient, perMinute, burst int, tokens *DailyTokens) *UserMessages {
	perMinute = max(perMinute, 0)
	if burst <= 0 {
		burst = perMinute
	}
	u := &UserMessages{rdb: rdb, batch: redisbatch.New(rdb, redisbatch.Defaults),
		burst: strconv.Itoa(burst), rate: strconv.Itoa(perMinute), period: strconv.Itoa(int(time.Minute / time.Second)),
		tokens: tokens}
	if perMinute > 0 {
		u.checked = append(u.checked, LimitUserMessages)
	}
	if tokens != nil && tokens.limit > 0 {
		u.checked = append(u.checked, LimitUserTokens)
	} else {
		u.tokens = nil
	}
	return u
}

// Verdict is the answer for one message.
type Verdict struct {
	// Refused names the limit that refuses the message (LimitUserMessages
	// or LimitUserTokens); "" lets it through.
	Refused string
	// RetryAfter is how long until the rate allows the next message (with
	// LimitUserMessages).
	RetryAfter time.Duration
	// Unchecked names the limits an error left undecided (with the error).
	Unchecked []string
}

// checkScript takes one message from the user's rate (KEYS[1]), then reads
// the day's token count (KEYS[2], when given) against ARGV[4]. It returns
// {0} to admit, {1, seconds until the next is allowed} when the rate
// refuses, {2} when the budget is spent. The order is the one the two
// checks had when they were separate: a message the budget refuses has
// taken from the rate.
//
// The rate part is redis_rate's allowN (github.com/go-redis/redis_rate v10,
// BSD-2-Clause, Copyright (c) 2013 The github.com/go-redis/redis_rate
// Authors; its GCRA from github.com/rwz/redis-gcra, Copyright (c) 2017
// Pavel Pravosud) with a cost of 1: the same arithmetic, key and stored
// value, so gateways of the release before, which ran redis_rate itself,
// share each user's allowance with this one during a rollout
// (TestUserMessagesShareTheRateWithRedisRate).
var checkScript = redis.NewScript(`
redis.replicate_commands()
local rate = tonumber(ARGV[2])
if rate > 0 then
  local burst = ARGV[1]
  local period = ARGV[3]
  local emission_interval = period / rate
  local increment = emission_interval
  local burst_offset = emission_interval * burst
  -- seconds since 2017-01-01 as a double (see redis_rate): good until 2048
  local jan_1_2017 = 1483228800
  local now = redis.call("TIME")
  now = (now[1] - jan_1_2017) + (now[2] / 1000000)
  local tat = redis.call("GET", KEYS[1])
  if not tat then
    tat = now
  else
    tat = tonumber(tat)
  end
  tat = math.max(tat, now)
  local new_tat = tat + increment
  local allow_at = new_tat - burst_offset
  local diff = now - allow_at
  if diff / emission_interval < 0 then
    return {1, tostring(diff * -1)}
  end
  local reset_after = new_tat - now
  if reset_after > 0 then
    redis.call("SET", KEYS[1], new_tat, "EX", math.ceil(reset_after))
  end
end
if KEYS[2] and tonumber(redis.call("GET", KEYS[2]) or "0") >= tonumber(ARGV[4]) then
  return {2}
end
return {0}
`)

// Check takes one message from userID's rate and checks the user's token
// budget. With both limits disabled it asks nothing of Redis.
func (u *UserMessages) Check(ctx context.Context, userID string) (Verdict, error) {
	if len(u.checked) == 0 {
		return Verdict{}, nil
	}
	keys := []string{rediskeys.UserMessages(userID)}
	var tokenLimit int64
	if u.tokens != nil {
		keys = append(keys, DailyTokensKey(userID, u.tokens.Now()))
		tokenLimit = u.tokens.limit
	}
	reply, err := redisbatch.RunScript(ctx, u.batch, u.rdb, checkScript, keys, u.burst, u.rate, u.period, tokenLimit).Slice()
	if err != nil {
		return Verdict{Unchecked: u.checked}, fmt.Errorf("user message limits: %w", err)
	}
	v, err := verdictOf(reply)
	if err != nil {
		return Verdict{Unchecked: u.checked}, fmt.Errorf("user message limits: %w", err)
	}
	return v, nil
}

// verdictOf reads checkScript's reply.
func verdictOf(reply []any) (Verdict, error) {
	var code int64 = -1
	if len(reply) > 0 {
		if c, ok := reply[0].(int64); ok {
			code = c
		}
	}
	switch {
	case code == 0 && len(reply) == 1:
		return Verdict{}, nil
	case code == 2 && len(reply) == 1:
		return Verdict{Refused: LimitUserTokens}, nil
	case code == 1 && len(reply) == 2:
		s, _ := reply[1].(string)
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Verdict{}, fmt.Errorf("retry after %q: %w", s, err)
		}
		return Verdict{Refused: LimitUserMessages, RetryAfter: time.Duration(secs * float64(time.Second))}, nil
	}
	return Verdict{}, fmt.Errorf("unexpected reply %v", reply)
}
