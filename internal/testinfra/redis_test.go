package testinfra

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func newRedisClient(t *testing.T, r *Redis) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatalf("parse %q: %v", r.URL(), err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestStartRedisSetGet(t *testing.T) {
	r := StartRedis(t)
	if !strings.HasPrefix(r.URL(), "redis://127.0.0.1:") || !strings.HasSuffix(r.URL(), "/0") {
		t.Fatalf("URL() = %q, want redis://127.0.0.1:<port>/0", r.URL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c := newRedisClient(t, r)
	if err := c.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	got, err := c.Get(ctx, "greeting").Result()
	if err != nil || got != "hello" {
		t.Fatalf("GET = %q, %v; want hello", got, err)
	}

	// The default configuration must keep nothing on disk.
	cfg, err := c.ConfigGet(ctx, "appendonly").Result()
	if err != nil || cfg["appendonly"] != "no" {
		t.Fatalf("CONFIG GET appendonly = %v, %v; want no", cfg, err)
	}
}

func TestRedisRestart(t *testing.T) {
	tests := []struct {
		name     string
		opts     []RedisOption
		stop     func(*Redis)
		wantKept bool
	}{
		{"persistence survives graceful restart", []RedisOption{WithPersistence()}, (*Redis).Stop, true},
		{"persistence survives kill", []RedisOption{WithPersistence()}, (*Redis).Kill, true},
		{"no persistence loses data", nil, (*Redis).Stop, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := StartRedis(t, tt.opts...)
			addr := r.Addr()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := newRedisClient(t, r)
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}

			tt.stop(r)
			if r.Running() {
				t.Fatal("Running() = true after stop")
			}
			if err := redisPing(addr); err == nil {
				t.Fatal("PING succeeded while the server was stopped")
			}

			r.Start()
			if r.Addr() != addr {
				t.Fatalf("address changed across restart: %s -> %s", addr, r.Addr())
			}
			got, err := c.Get(ctx, "k").Result()
			switch {
			case tt.wantKept && (err != nil || got != "v"):
				t.Fatalf("after restart GET = %q, %v; want v", got, err)
			case !tt.wantKept && !errors.Is(err, redis.Nil):
				t.Fatalf("after restart GET = %q, %v; want redis.Nil", got, err)
			}
		})
	}
}

func TestRedisRestartMethod(t *testing.T) {
	r := StartRedis(t, WithPersistence())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := newRedisClient(t, r)
	for i := range 3 {
		if err := c.Incr(ctx, "counter").Err(); err != nil {
			t.Fatalf("INCR %d: %v", i, err)
		}
		r.Restart()
	}
	n, err := c.Get(ctx, "counter").Int()
	if err != nil || n != 3 {
		t.Fatalf("counter = %d, %v; want 3", n, err)
	}
}

func TestRedisStartFailureShowsLog(t *testing.T) {
	// A bad argument makes redis-server exit at once; the error must carry
	// its output so a CI failure explains itself.
	r := &Redis{t: t, bin: RequireBinary(t, "redis-server"), dir: t.TempDir(), port: FreePort(t)}
	r.cfg.args = []string{"--no-such-option", "1"}
	err := r.start()
	if err == nil {
		r.Stop()
		t.Fatal("start succeeded with an invalid option")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Fatalf("error does not include the server output: %v", err)
	}
	if r.Running() {
		t.Fatal("failed start left a process behind")
	}
}

func TestTail(t *testing.T) {
	long := strings.Repeat("x", 50) + "\n"
	for _, tc := range []struct {
		name, in string
		n        int
		want     string
	}{
		{"short text is kept", "a\nb\n", 10, "a\nb\n"},
		{"starts at a line", "aaaa\nbb\ncc\n", 8, "bb\ncc\n"},
		{"a last line longer than n is cut, not dropped", "a\n" + long, 10, long[len(long)-10:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tail(tc.in, tc.n); got != tc.want {
				t.Fatalf("tail(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}
