package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// ModelConfig bounds the calls to the model API across every ai-consumer
// instance (the provider's quota is per account, not per process).
type ModelConfig struct {
	RequestsPerMin int `env:"LLM_REQUESTS_PER_MIN" envDefault:"0"`
	TokensPerMin   int `env:"LLM_TOKENS_PER_MIN" envDefault:"0"`
	// MaxConcurrent bounds model calls in flight across instances.
	MaxConcurrent int `env:"LLM_GLOBAL_MAX_CONCURRENCY" envDefault:"0"`
}

// Validate checks the settings (0 disables each).
func (c ModelConfig) Validate() error {
	if c.RequestsPerMin < 0 || c.TokensPerMin < 0 || c.MaxConcurrent < 0 {
		return fmt.Errorf("LLM_REQUESTS_PER_MIN, LLM_TOKENS_PER_MIN, LLM_GLOBAL_MAX_CONCURRENCY: must not be negative")
	}
	return nil
}

// Model waits for room under the shared model limits. Waiting, not
// refusing: a message over the quota is answered a little later.
type Model struct {
	lim   *redis_rate.Limiter
	cfg   ModelConfig
	slots *UserSockets // a semaphore with expiring slots, keyed by call
}

// NewModel builds the shared model limits on rdb.
func NewModel(rdb redis.UniversalClient, cfg ModelConfig) *Model {
	// A slot expires if its instance died mid-call; calls are bounded by
	// the model timeout, so a few minutes is safe.
	return &Model{lim: redis_rate.NewLimiter(rdb), cfg: cfg, slots: NewUserSockets(rdb, cfg.MaxConcurrent, 5*time.Minute)}
}

const modelKey = "llm-global"

// Acquire waits until a call estimated at tokens may start, and returns the
// function that ends it. ctx bounds the wait.
func (m *Model) Acquire(ctx context.Context, callID string, tokens int) (func(), error) {
	if m.cfg.RequestsPerMin > 0 {
		if err := m.wait(ctx, "chat:{"+modelKey+"}:rpm", redis_rate.PerMinute(m.cfg.RequestsPerMin), 1); err != nil {
			return nil, err
		}
	}
	if m.cfg.TokensPerMin > 0 && tokens > 0 {
		if err := m.wait(ctx, "chat:{"+modelKey+"}:tpm", redis_rate.PerMinute(m.cfg.TokensPerMin), min(tokens, m.cfg.TokensPerMin)); err != nil {
			return nil, err
		}
	}
	if m.cfg.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	for {
		ok, err := m.slots.Acquire(ctx, modelKey, callID)
		if err != nil {
			return nil, err
		}
		if ok {
			return func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				_ = m.slots.Release(rctx, modelKey, callID)
			}, nil
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

func (m *Model) wait(ctx context.Context, key string, limit redis_rate.Limit, n int) error {
	for {
		res, err := m.lim.AllowN(ctx, key, limit, n)
		if err != nil {
			return fmt.Errorf("model rate limit: %w", err)
		}
		if res.Allowed > 0 {
			return nil
		}
		if err := sleep(ctx, max(res.RetryAfter, 5*time.Millisecond)); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
