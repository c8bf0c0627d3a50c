package ratelimit

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/rediskeys"
	"github.com/chatrelay/chat/internal/testinfra"
)

func TestUserMessagesExactAcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	const limit = 10
	insts := []*UserMessages{NewUserMessages(a, limit, 0, nil), NewUserMessages(b, limit, 0, nil)}
	var retry atomic.Int64
	got := hammer(t, 50, func(_ int, inst int) (bool, error) {
		v, err := insts[inst].Check(ctx, "u1")
		if v.Refused != "" {
			if v.Refused != LimitUserMessages {
				t.Errorf("refused by %q, want %q", v.Refused, LimitUserMessages)
			}
			retry.Store(int64(v.RetryAfter))
		}
		return v.Refused == "", err
	})
	if got != limit {
		t.Fatalf("%d of 50 messages allowed across two instances, want exactly %d", got, limit)
	}
	// 10/min: the next one is due in about 6s.
	if ra := time.Duration(retry.Load()); ra <= 0 || ra > 6*time.Second {
		t.Fatalf("RetryAfter %v, want (0, 6s]", ra)
	}
	// Another user has their own allowance.
	if v, err := insts[1].Check(ctx, "u2"); err != nil || v.Refused != "" {
		t.Fatalf("u2: %+v, %v", v, err)
	}
	for _, k := range keys(t, a) {
		if !strings.Contains(k, "chat:{u1}:") && !strings.Contains(k, "chat:{u2}:") {
			t.Fatalf("key %q lacks the {userid} hash tag", k)
		}
	}
}

func TestUserMessagesBurst(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	// 30/min: one more every 2s, far longer than the hammer takes.
	insts := []*UserMessages{NewUserMessages(a, 30, 3, nil), NewUserMessages(b, 30, 3, nil)}
	if got := hammer(t, 20, func(_ int, inst int) (bool, error) {
		v, err := insts[inst].Check(ctx, "u1")
		return v.Refused == "", err
	}); got != 3 {
		t.Fatalf("%d allowed, want the burst of 3", got)
	}
	v, _ := insts[0].Check(ctx, "u1")
	if v.Refused != LimitUserMessages || v.RetryAfter <= 0 || v.RetryAfter > 2*time.Second {
		t.Fatalf("after the burst: %+v, want refused with RetryAfter in (0, 2s]", v)
	}
	time.Sleep(v.RetryAfter + 100*time.Millisecond)
	if v, _ := insts[1].Check(ctx, "u1"); v.Refused != "" {
		t.Fatalf("after RetryAfter one more must be allowed: %+v", v)
	}
}

// During a rollout, gateways of the release before (redis_rate's own
// script) and of this one (checkScript) take from one allowance per user:
// same key, same stored value, same arithmetic.
func TestUserMessagesShareTheRateWithRedisRate(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	ours := NewUserMessages(a, 10, 4, nil)
	theirs := redis_rate.NewLimiter(b)
	limit := redis_rate.Limit{Rate: 10, Burst: 4, Period: time.Minute}
	// redis_rate prefixes its keys with "rate:".
	theirKey := strings.TrimPrefix(rediskeys.UserMessages("u1"), "rate:")
	got := hammer(t, 40, func(_ int, inst int) (bool, error) {
		if inst == 0 {
			v, err := ours.Check(ctx, "u1")
			return v.Refused == "", err
		}
		r, err := theirs.Allow(ctx, theirKey, limit)
		if err != nil {
			return false, err
		}
		return r.Allowed > 0, nil
	})
	if got != 4 {
		t.Fatalf("%d allowed by both releases together, want the burst of 4", got)
	}
	v, err := ours.Check(ctx, "u1")
	r, err2 := theirs.Allow(ctx, theirKey, limit)
	if err != nil || err2 != nil || v.Refused == "" || r.Allowed != 0 {
		t.Fatalf("both must refuse now: ours %+v %v, redis_rate %+v %v", v, err, r, err2)
	}
	// Both read the same theoretical arrival time: the waits agree.
	if d := v.RetryAfter - r.RetryAfter; d < -time.Second || d > time.Second || v.RetryAfter <= 0 {
		t.Fatalf("RetryAfter: ours %v, redis_rate %v", v.RetryAfter, r.RetryAfter)
	}
	// What each writes for a fresh user is the same kind of value, expiring
	// the same way.
	if _, err := ours.Check(ctx, "u2"); err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.Allow(ctx, strings.TrimPrefix(rediskeys.UserMessages("u3"), "rate:"), limit); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u2", "u3"} {
		k := rediskeys.UserMessages(u)
		tat, err := a.Get(ctx, k).Float64()
		ttl := a.TTL(ctx, k).Val()
		if err != nil || tat <= 0 || ttl <= 0 || ttl > 6*time.Second {
			t.Fatalf("%s: stored %v (%v), TTL %v; want a GCRA arrival time expiring within one interval", k, tat, err, ttl)
		}
	}
}

// The token budget is read in the same call: a spent budget refuses, a
// new UTC day renews it, and the rate is taken first (as when the checks
// were separate), so a message the budget refuses still counts.
func TestUserMessagesTokenBudget(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	tokens := NewDailyTokens(a, 100)
	day := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tokens.Now = func() time.Time { return day }
	u := NewUserMessages(a, 60, 2, tokens)
	if v, err := u.Check(ctx, "u1"); err != nil || v.Refused != "" {
		t.Fatalf("fresh budget: %+v %v", v, err)
	}
	if _, err := tokens.Spend(ctx, "u1", 100); err != nil {
		t.Fatal(err)
	}
	if v, err := u.Check(ctx, "u1"); err != nil || v.Refused != LimitUserTokens {
		t.Fatalf("spent budget: %+v %v, want refused by %s", v, err, LimitUserTokens)
	}
	if v, err := u.Check(ctx, "u1"); err != nil || v.Refused != LimitUserMessages {
		t.Fatalf("third message in the burst of 2: %+v %v, want the rate to refuse", v, err)
	}
	if v, err := u.Check(ctx, "u2"); err != nil || v.Refused != "" {
		t.Fatalf("another user: %+v %v", v, err)
	}
	day = day.Add(24 * time.Hour)
	time.Sleep(time.Second + 100*time.Millisecond) // 60/min: one more per second
	if v, err := u.Check(ctx, "u1"); err != nil || v.Refused != "" {
		t.Fatalf("next UTC day: %+v %v, want a fresh budget", v, err)
	}
	// With the rate off the budget is still checked, and no rate key is kept.
	budgetOnly := NewUserMessages(a, 0, 0, tokens)
	if _, err := tokens.Spend(ctx, "u4", 100); err != nil {
		t.Fatal(err)
	}
	if v, err := budgetOnly.Check(ctx, "u4"); err != nil || v.Refused != LimitUserTokens {
		t.Fatalf("budget only: %+v %v", v, err)
	}
	if n := a.Exists(ctx, rediskeys.UserMessages("u4")).Val(); n != 0 {
		t.Fatal("the rate is off, yet its key was written")
	}
}

// roundTrips counts what a client sends: single commands and pipelines
// (with the commands in each).
type roundTrips struct {
	mu        sync.Mutex
	singles   []string
	pipelines [][]string
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.singles = append(h.singles, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		h.mu.Lock()
		h.pipelines = append(h.pipelines, names)
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *roundTrips) take() (singles []string, pipelines [][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	singles, pipelines = h.singles, h.pipelines
	h.singles, h.pipelines = nil, nil
	return singles, pipelines
}

// A message costs one round trip for both limits; a server that lost the
// script (restart, SCRIPT FLUSH, failover) gets it again from the one call
// that found it missing, and that call still decides.
func TestUserMessagesOneRoundTripPerMessage(t *testing.T) {
	srv := testinfra.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	u := NewUserMessages(rdb, 600, 100, NewDailyTokens(rdb, 1000))
	if _, err := u.Check(ctx, "warm"); err != nil { // loads the script
		t.Fatal(err)
	}
	h := &roundTrips{}
	rdb.AddHook(h)
	for range 5 {
		if v, err := u.Check(ctx, "u1"); err != nil || v.Refused != "" {
			t.Fatal(v, err)
		}
	}
	singles, pipelines := h.take()
	if len(singles) != 0 || len(pipelines) != 5 || !slices.Equal(pipelines[0], []string{"evalsha"}) {
		t.Fatalf("5 messages sent %v alone and pipelines %v; want 5 pipelines of one evalsha", singles, pipelines)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDailyTokens(rdb, 1000).Spend(ctx, "u1", 1000); err != nil {
		t.Fatal(err)
	}
	h.take()
	if v, err := u.Check(ctx, "u1"); err != nil || v.Refused != LimitUserTokens {
		t.Fatalf("after SCRIPT FLUSH: %+v %v, want the budget's refusal", v, err)
	}
	if _, pipelines := h.take(); len(pipelines) != 1 {
		t.Fatalf("after SCRIPT FLUSH: pipelines %v", pipelines)
	}
	if v, err := u.Check(ctx, "u2"); err != nil || v.Refused != "" {
		t.Fatal(v, err)
	}
	if singles, _ := h.take(); len(singles) != 0 {
		t.Fatalf("the script was not loaded again: %v sent alone", singles)
	}
}

// When Redis cannot answer, the error names every limit it left undecided
// (the gateway counts each, then lets the message through).
func TestUserMessagesErrorLeavesTheLimitsUnchecked(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testinfra.FreeAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(&refusingRedis{})
	ctx := context.Background()
	for _, tc := range []struct {
		perMin int
		tokens int64
		want   []string
	}{
		{30, 1000, []string{LimitUserMessages, LimitUserTokens}},
		{30, 0, []string{LimitUserMessages}},
		{0, 1000, []string{LimitUserTokens}},
	} {
		v, err := NewUserMessages(rdb, tc.perMin, 0, NewDailyTokens(rdb, tc.tokens)).Check(ctx, "u1")
		if err == nil || v.Refused != "" || !slices.Equal(v.Unchecked, tc.want) {
			t.Errorf("rate %d, budget %d: %+v %v; want an error leaving %v unchecked", tc.perMin, tc.tokens, v, err, tc.want)
		}
	}
}

func TestVerdictOfRefusesAnUnexpectedReply(t *testing.T) {
	for _, reply := range [][]any{nil, {}, {int64(3)}, {int64(1)}, {int64(1), "soon"}, {"0"}, {int64(0), "x"}} {
		if v, err := verdictOf(reply); err == nil {
			t.Errorf("%v: %+v, want an error", reply, v)
		}
	}
	if v, err := verdictOf([]any{int64(1), "1.5"}); err != nil || v.Refused != LimitUserMessages || v.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("%+v %v", v, err)
	}
}
