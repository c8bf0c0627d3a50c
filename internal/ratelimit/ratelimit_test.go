package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/testinfra"
)

// twoInstances starts a real redis-server and returns two separate clients,
// standing for two gateway instances.
func twoInstances(t *testing.T) (a, b redis.UniversalClient) {
	t.Helper()
	srv := testinfra.StartRedis(t)
	a = redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 32})
	b = redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 32})
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// hammer runs n goroutines, alternating between the two instances, released
// at once, and counts how many fn calls returned true.
func hammer(t *testing.T, n int, fn func(i int, inst int) (bool, error)) int {
	t.Helper()
	var (
		wg      sync.WaitGroup
		allowed atomic.Int64
		start   = make(chan struct{})
		errs    = make(chan error, n)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ok, err := fn(i, i%2)
			if err != nil {
				errs <- err
				return
			}
			if ok {
				allowed.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return int(allowed.Load())
}

func keys(t *testing.T, c redis.UniversalClient) []string {
	t.Helper()
	ks, err := c.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestDisabledLimitsTouchNothing(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	l := New(a, Config{})
	for i := 0; i < 100; i++ {
		if v, err := l.Messages.Check(ctx, "u1"); err != nil || v.Refused != "" {
			t.Fatal(v, err)
		}
		if r, err := l.IPConnects.Allow(ctx, "10.0.0.1"); err != nil || !r.Allowed {
			t.Fatal(r, err)
		}
		if ok, err := l.Sockets.Acquire(ctx, "u1", fmt.Sprint(i)); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if !l.Instance.TryAcquire() {
			t.Fatal("instance limit 0 must not refuse")
		}
	}
	tokens := NewDailyTokens(a, Config{}.UserTokensPerDay)
	if rem, err := tokens.Spend(ctx, "u1", 1e9); err != nil || rem != Unlimited {
		t.Fatal(rem, err)
	}
	if rem, err := tokens.Remaining(ctx, "u1"); err != nil || rem != Unlimited {
		t.Fatal(rem, err)
	}
	if ks := keys(t, a); len(ks) != 0 {
		t.Fatalf("disabled limits wrote keys %v", ks)
	}
}

func TestUserSocketsExactAcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	const limit = 3
	insts := []*UserSockets{NewUserSockets(a, limit, time.Minute), NewUserSockets(b, limit, time.Minute)}
	var (
		mu   sync.Mutex
		held []string
	)
	got := hammer(t, 50, func(i int, inst int) (bool, error) {
		id := fmt.Sprintf("gw-%d:%d", inst, i)
		ok, err := insts[inst].Acquire(ctx, "u1", id)
		if ok {
			mu.Lock()
			held = append(held, id)
			mu.Unlock()
		}
		return ok, err
	})
	if got != limit {
		t.Fatalf("%d of 50 sockets admitted across two instances, want exactly %d", got, limit)
	}
	if n, err := insts[0].Count(ctx, "u1"); err != nil || n != limit {
		t.Fatalf("Count = %d, %v", n, err)
	}
	// Acquiring or refreshing a held slot neither fails nor takes another.
	if ok, err := insts[1].Acquire(ctx, "u1", held[0]); err != nil || !ok {
		t.Fatalf("re-acquire of a held slot: %v %v", ok, err)
	}
	if ok, err := insts[1].Refresh(ctx, "u1", held[1]); err != nil || !ok {
		t.Fatalf("refresh of a held slot: %v %v", ok, err)
	}
	if ok, _ := insts[0].Acquire(ctx, "u1", "late"); ok {
		t.Fatal("a 4th socket must be refused")
	}
	// Another user is not affected.
	if ok, _ := insts[0].Acquire(ctx, "u2", "x"); !ok {
		t.Fatal("u2 refused")
	}
	// Release frees exactly one slot.
	if err := insts[1].Release(ctx, "u1", held[2]); err != nil {
		t.Fatal(err)
	}
	if ok, _ := insts[0].Acquire(ctx, "u1", "late"); !ok {
		t.Fatal("a released slot must be reusable")
	}
	if ok, _ := insts[0].Acquire(ctx, "u1", "later"); ok {
		t.Fatal("only one slot was released")
	}
	ttl, err := a.PTTL(ctx, UserSocketsKey("u1")).Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("the set must expire with its sockets: PTTL %v %v", ttl, err)
	}
}

func TestUserSocketsExpireWithoutRefresh(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	// Long enough that a loaded machine still refreshes in time.
	const ttl = time.Second
	crashed := NewUserSockets(a, 2, ttl)
	alive := NewUserSockets(b, 2, ttl)
	for _, id := range []string{"dead-1", "dead-2"} {
		if ok, err := crashed.Acquire(ctx, "u1", id); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	if ok, _ := alive.Acquire(ctx, "u1", "new"); ok {
		t.Fatal("limit reached: must refuse")
	}
	// The crashed instance never refreshes nor releases: its slots lapse.
	time.Sleep(ttl + 200*time.Millisecond)
	if ok, err := alive.Acquire(ctx, "u1", "new"); err != nil || !ok {
		t.Fatalf("slots of a crashed instance must expire: %v %v", ok, err)
	}
	// A refreshed socket outlives several TTLs while an idle one lapses.
	if ok, _ := alive.Acquire(ctx, "u1", "idle"); !ok {
		t.Fatal("second slot")
	}
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if ok, err := alive.Refresh(ctx, "u1", "new"); err != nil || !ok {
			t.Fatalf("refresh lost the slot: %v %v", ok, err)
		}
		time.Sleep(ttl / 4)
	}
	if n, _ := alive.Count(ctx, "u1"); n != 1 {
		t.Fatalf("Count = %d, want only the refreshed socket", n)
	}
	// A slot that lapsed while the user filled up again cannot be refreshed.
	time.Sleep(ttl + 100*time.Millisecond)
	for _, id := range []string{"other-1", "other-2"} {
		if ok, _ := crashed.Acquire(ctx, "u1", id); !ok {
			t.Fatal(id)
		}
	}
	if ok, err := alive.Refresh(ctx, "u1", "new"); err != nil || ok {
		t.Fatalf("refresh of a lapsed slot on a full user must fail: %v %v", ok, err)
	}
	// The key itself goes away when every socket lapsed.
	time.Sleep(ttl + 200*time.Millisecond)
	if n, _ := a.Exists(ctx, UserSocketsKey("u1")).Result(); n != 0 {
		t.Fatal("the set of a user without sockets must expire")
	}
}

func TestIPConnectsExactAcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	const limit = 5
	insts := []*IPConnects{NewIPConnects(a, limit), NewIPConnects(b, limit)}
	if got := hammer(t, 50, func(_ int, inst int) (bool, error) {
		r, err := insts[inst].Allow(ctx, "203.0.113.9")
		return r.Allowed, err
	}); got != limit {
		t.Fatalf("%d of 50 attempts allowed, want exactly %d", got, limit)
	}
	// One /64 is one client; another /64 and another IPv4 are not.
	if got := hammer(t, 20, func(i int, inst int) (bool, error) {
		r, err := insts[inst].Allow(ctx, fmt.Sprintf("2001:db8:1:2::%x", i+1))
		return r.Allowed, err
	}); got != limit {
		t.Fatalf("%d attempts from one /64 allowed, want %d", got, limit)
	}
	for _, ip := range []string{"2001:db8:1:3::1", "203.0.113.10", "[2001:db8:9::1]:443"} {
		if r, err := insts[0].Allow(ctx, ip); err != nil || !r.Allowed {
			t.Fatalf("%s: %+v %v", ip, r, err)
		}
	}
}

func TestIPBucket(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.9":              "203.0.113.9",
		" 203.0.113.9 ":            "203.0.113.9",
		"203.0.113.9:5555":         "203.0.113.9",
		"::ffff:203.0.113.9":       "203.0.113.9",
		"2001:db8:1:2:3:4:5:6":     "2001:db8:1:2::/64",
		"[2001:db8:1:2::9]:80":     "2001:db8:1:2::/64",
		"fe80::1%eth0":             "fe80::/64",
		"not-an-ip":                "invalid",
		"":                         "invalid",
		"1.2.3.4}:{evil":           "invalid",
		"2001:db8:1:2:ffff::1/128": "invalid",
	} {
		if got := IPBucket(in); got != want {
			t.Errorf("IPBucket(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDailyTokensExactAcrossInstances(t *testing.T) {
	a, b := twoInstances(t)
	ctx := context.Background()
	insts := []*DailyTokens{NewDailyTokens(a, 1000), NewDailyTokens(b, 1000)}
	hammer(t, 50, func(_ int, inst int) (bool, error) {
		_, err := insts[inst].Spend(ctx, "u1", 30)
		return true, err
	})
	used, err := a.Get(ctx, DailyTokensKey("u1", time.Now())).Int64()
	if err != nil || used != 1500 {
		t.Fatalf("used %d (%v), want every spend counted: 1500", used, err)
	}
	if rem, err := insts[1].Remaining(ctx, "u1"); err != nil || rem != 0 {
		t.Fatalf("Remaining = %d, %v; want 0 once overdrawn", rem, err)
	}
	if rem, err := insts[0].Remaining(ctx, "u2"); err != nil || rem != 1000 {
		t.Fatalf("u2 Remaining = %d, %v", rem, err)
	}
	if _, err := insts[0].Spend(ctx, "u1", -1); err == nil {
		t.Fatal("a negative spend must be an error")
	}
}

func TestDailyTokensRollOverAtUTCMidnight(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 23, 59, 30, 0, time.FixedZone("CEST", 2*3600)) // 21:59:30 UTC
	d := NewDailyTokens(a, 1000)
	d.Now = func() time.Time { return now }
	if rem, err := d.Spend(ctx, "u1", 900); err != nil || rem != 100 {
		t.Fatalf("Spend = %d, %v", rem, err)
	}
	// Local midnight is not the UTC day's end.
	now = now.Add(time.Minute)
	if rem, _ := d.Remaining(ctx, "u1"); rem != 100 {
		t.Fatalf("after local midnight Remaining = %d, want 100 (the UTC day goes on)", rem)
	}
	ttl, _ := a.TTL(ctx, DailyTokensKey("u1", now)).Result()
	if want := 2*time.Hour + dayGrace; ttl <= 0 || ttl > want+time.Minute {
		t.Fatalf("counter TTL %v, want about %v (to the end of the UTC day plus grace)", ttl, want)
	}
	if got := d.ResetIn(); got < 2*time.Hour-time.Minute || got > 2*time.Hour {
		t.Fatalf("ResetIn %v", got)
	}
	if rem, _ := d.Spend(ctx, "u1", 150); rem != 0 {
		t.Fatalf("overdrawn Remaining = %d, want 0", rem)
	}
	// Past UTC midnight a fresh budget.
	now = time.Date(2026, 5, 2, 0, 0, 10, 0, time.UTC)
	if rem, err := d.Remaining(ctx, "u1"); err != nil || rem != 1000 {
		t.Fatalf("new day Remaining = %d, %v", rem, err)
	}
	if rem, _ := d.Spend(ctx, "u1", 10); rem != 990 {
		t.Fatalf("new day Spend left %d", rem)
	}
	for _, k := range keys(t, a) {
		if !strings.HasPrefix(k, "chat:{u1}:tokens:2026-05-0") {
			t.Fatalf("unexpected key %q", k)
		}
	}
}

func TestInstanceSockets(t *testing.T) {
	s := NewInstanceSockets(10)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.TryAcquire() {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 10 || s.InUse() != 10 {
		t.Fatalf("%d acquired, %d in use; want 10", ok.Load(), s.InUse())
	}
	s.Release()
	if !s.TryAcquire() || s.TryAcquire() {
		t.Fatal("one release must free exactly one slot")
	}
}

func TestConfig(t *testing.T) {
	var c Config
	if err := config.LoadFrom(&c, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	want := Config{UserMessagesPerMin: 30, UserMessagesBurst: 10, UserSockets: 10, UserSocketTTL: 90 * time.Second,
		IPConnectsPerMin: 120, ExemptNetworks: "127.0.0.1/32,::1/128", InstanceSockets: 20000, UserTokensPerDay: 200000}
	if c != want {
		t.Fatalf("defaults %+v, want %+v", c, want)
	}
	for env, name := range map[string]string{
		"RATE_USER_MESSAGES_PER_MIN": "-1",
		"RATE_USER_MESSAGES_BURST":   "-1",
		"LIMIT_USER_SOCKETS":         "-1",
		"LIMIT_USER_SOCKETS_TTL":     "10ms",
		"LIMIT_IP_CONNECTS_PER_MIN":  "lots",
		"LIMIT_INSTANCE_SOCKETS":     "-5",
		"LIMIT_USER_TOKENS_PER_DAY":  "-1",
		"LIMIT_EXEMPT_NETWORKS":      "10.0.0.0/33",
	} {
		err := config.LoadFrom(&Config{}, map[string]string{env: name})
		if err == nil || !strings.Contains(err.Error(), env) {
			t.Errorf("%s=%s: want an error naming it, got %v", env, name, err)
		}
	}
	if len(Names()) != 7 {
		t.Fatal(Names())
	}
}
