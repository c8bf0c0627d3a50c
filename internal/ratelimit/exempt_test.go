package ratelimit

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/testinfra"
)

func TestParseNetworks(t *testing.T) {
	for in, want := range map[string][]string{
		"127.0.0.1/32,::1/128":         {"127.0.0.1/32", "::1/128"},
		" 10.0.0.0/8 , 192.168.1.7 ":   {"10.0.0.0/8", "192.168.1.7/32"},
		"::1":                          {"::1/128"},
		"none":                         nil,
		"2001:db8::/32,172.16.0.0/12 ": {"2001:db8::/32", "172.16.0.0/12"},
	} {
		got, err := ParseNetworks(in)
		if err != nil {
			t.Errorf("ParseNetworks(%q): %v", in, err)
			continue
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if !slices.Equal(s, want) {
			t.Errorf("ParseNetworks(%q) = %q, want %q", in, s, want)
		}
	}
	for _, in := range []string{
		"10.1.2.3/8",           // host bits: which network was meant?
		"::ffff:127.0.0.1/128", // IPv4-mapped: would match nobody
		"fe80::1%eth0",
		"localhost",
		"10.0.0.0/33",
		"127.0.0.1/32,",
		"",
		"none,10.0.0.0/8",
	} {
		if _, err := ParseNetworks(in); err == nil || !strings.HasPrefix(err.Error(), "LIMIT_EXEMPT_NETWORKS: ") {
			t.Errorf("ParseNetworks(%q): err = %v, want one naming LIMIT_EXEMPT_NETWORKS", in, err)
		}
	}
}

func TestExemptNetworksConfig(t *testing.T) {
	var c Config
	if err := config.LoadFrom(&c, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if got := c.exemptPrefixes(); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}) {
		t.Fatalf("default exempt networks %v, want loopback as nginx.conf exempts it", got)
	}
	err := config.LoadFrom(&c, map[string]string{"LIMIT_EXEMPT_NETWORKS": "10.0.0.0/8,bogus"})
	if err == nil || !strings.Contains(err.Error(), "LIMIT_EXEMPT_NETWORKS") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("a bad value: err = %v, want one naming the variable and the entry", err)
	}
	if err := config.LoadFrom(&c, map[string]string{"LIMIT_EXEMPT_NETWORKS": "none"}); err != nil || c.exemptPrefixes() != nil {
		t.Fatalf("none: %v %v", c.exemptPrefixes(), err)
	}
}

// refusingRedis counts the commands given to a client and fails each one
// without sending it anywhere.
type refusingRedis struct{ calls atomic.Int64 }

func (h *refusingRedis) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *refusingRedis) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(context.Context, redis.Cmder) error {
		h.calls.Add(1)
		return errors.New("redis was asked")
	}
}

func (h *refusingRedis) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error {
		h.calls.Add(1)
		return errors.New("redis was asked")
	}
}

// An exempt address is allowed without a Redis round trip.
func TestIPConnectsExemptSkipsRedis(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testinfra.FreeAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := &refusingRedis{}
	rdb.AddHook(hook)
	var c Config
	if err := config.LoadFrom(&c, map[string]string{"LIMIT_IP_CONNECTS_PER_MIN": "1"}); err != nil {
		t.Fatal(err)
	}
	l := New(rdb, c).IPConnects
	ctx := context.Background()
	for _, ip := range []string{"127.0.0.1", "127.0.0.1:5555", "::1", "[::1]:443", "::ffff:127.0.0.1", " 127.0.0.1 "} {
		for range 3 {
			if r, err := l.Allow(ctx, ip); err != nil || !r.Allowed || r.Remaining != -1 {
				t.Fatalf("%q is exempt by default: %+v %v", ip, r, err)
			}
		}
	}
	if n := hook.calls.Load(); n != 0 {
		t.Fatalf("exempt addresses cost %d Redis calls, want none", n)
	}
	// Everything else is counted in Redis.
	for _, ip := range []string{"127.0.0.2", "10.0.0.1", "::2", "not-an-ip", ""} {
		before := hook.calls.Load()
		if _, err := l.Allow(ctx, ip); err == nil || hook.calls.Load() == before {
			t.Errorf("%q was not counted in Redis (%v)", ip, err)
		}
	}
}

func TestIPConnectsExemptNetworksLimitTheRest(t *testing.T) {
	a, _ := twoInstances(t)
	ctx := context.Background()
	l := NewIPConnects(a, 2, netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48"))
	for i := 0; i < 10; i++ {
		for _, ip := range []string{"10.9.8.7", "[2001:db8:1:2::3]:80"} {
			if r, err := l.Allow(ctx, ip); err != nil || !r.Allowed {
				t.Fatalf("attempt %d from exempt %s: %+v %v", i, ip, r, err)
			}
		}
	}
	allowed := 0
	for i := 0; i < 10; i++ {
		r, err := l.Allow(ctx, "11.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("%d of 10 attempts from a limited address allowed, want 2", allowed)
	}
}
