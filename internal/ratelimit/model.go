package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/rediskeys"
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

// Acquire waits until a call estimated at tokens may start, and returns the
// function that ends it. ctx bounds the wait.
func (m *Model) Acquire(ctx context.Context, callID string, tokens int) (func(), error) {
	if m.cfg.RequestsPerMin > 0 {
		if err := m.wait(ctx, rediskeys.ModelRequests(), redis_rate.PerMinute(m.cfg.RequestsPerMin), 1); err != nil {
			return nil, err
		}
	}
	if m.cfg.TokensPerMin > 0 && tokens > 0 {
		if err := m.wait(ctx, rediskeys.ModelTokens(), redis_rate.PerMinute(m.cfg.TokensPerMin), min(tokens, m.cfg.TokensPerMin)); err != nil {
			return nil, err
		}
	}
	if m.cfg.MaxConcurrent <= 0 {
		return func() {}, nil
	}
	// The slots are polled: a freed slot has no one to tell, and a call
	// lasts long enough (a second or more) that 20 ms of delay is noise.
	err := untilAllowed(ctx, backoff.NewConstantBackOff(20*time.Millisecond), func() (bool, error) {
		return m.slots.Acquire(ctx, rediskeys.ModelTag, callID)
	})
	if err != nil {
		return nil, err
	}
	return func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = m.slots.Release(rctx, rediskeys.ModelTag, callID)
	}, nil
}

// wait takes n from the GCRA limit at key, waiting as long as the limiter
// says each time it refuses.
func (m *Model) wait(ctx context.Context, key string, limit redis_rate.Limit, n int) error {
	return untilAllowed(ctx, backoff.NewConstantBackOff(5*time.Millisecond), func() (bool, error) {
		res, err := m.lim.AllowN(ctx, key, limit, n)
		if err != nil {
			return false, fmt.Errorf("model rate limit: %w", err)
		}
		if res.Allowed > 0 {
			return true, nil
		}
		return false, &backoff.RetryAfterError{Duration: max(res.RetryAfter, 5*time.Millisecond)}
	})
}

// errNotYet is a refusal that waiting may lift.
var errNotYet = errors.New("not yet")

// untilAllowed asks try until it allows, waiting b between refusals (or
// the *backoff.RetryAfterError try returns), for as long as ctx lives. An
// error of try ends the wait: Redis failures are the caller's to handle.
func untilAllowed(ctx context.Context, b backoff.BackOff, try func() (bool, error)) error {
	_, err := backoff.Retry(ctx, func() (bool, error) {
		ok, err := try()
		var later *backoff.RetryAfterError
		switch {
		case errors.As(err, &later):
			return false, err
		case err != nil:
			return false, backoff.Permanent(err)
		case !ok:
			return false, errNotYet
		}
		return true, nil
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0))
	return err
}
