package llm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Policy configures retries and the circuit breaker around model calls.
type Policy struct {
	MaxAttempts int           `env:"LLM_MAX_ATTEMPTS" envDefault:"4"`
	BaseDelay   time.Duration `env:"LLM_RETRY_BASE_DELAY" envDefault:"250ms"`
	MaxDelay    time.Duration `env:"LLM_RETRY_MAX_DELAY" envDefault:"10s"`
	// RetryBudget caps retries at this fraction of calls (plus a small
	// reserve), so a struggling API is not hit with a retry storm.
	RetryBudget float64 `env:"LLM_RETRY_BUDGET" envDefault:"0.2"`
	// BreakerFailures consecutive failures open the breaker for
	// BreakerOpenFor; while open, calls fail at once.
	BreakerFailures uint32        `env:"LLM_BREAKER_FAILURES" envDefault:"5"`
	BreakerOpenFor  time.Duration `env:"LLM_BREAKER_OPEN_FOR" envDefault:"30s"`
}

// Validate checks the policy.
func (p Policy) Validate() error {
	switch {
	case p.MaxAttempts < 1:
		return errors.New("LLM_MAX_ATTEMPTS: must be at least 1")
	case p.BaseDelay <= 0 || p.MaxDelay < p.BaseDelay:
		return errors.New("LLM_RETRY_BASE_DELAY/LLM_RETRY_MAX_DELAY: need 0 < base <= max")
	case p.RetryBudget < 0 || p.RetryBudget > 1:
		return errors.New("LLM_RETRY_BUDGET: must be between 0 and 1")
	case p.BreakerFailures < 1:
		return errors.New("LLM_BREAKER_FAILURES: must be at least 1")
	case p.BreakerOpenFor <= 0:
		return errors.New("LLM_BREAKER_OPEN_FOR: must be positive")
	}
	return nil
}

// ErrUnavailable is returned without calling the model while the breaker is
// open; ErrExhausted when retries (attempts or budget) ran out.
var (
	ErrUnavailable = errors.New("model temporarily unavailable (circuit open)")
	ErrExhausted   = errors.New("model call failed after retries")
)

// Observer receives what the resilient client does, for metrics.
type Observer interface {
	Retry(class string)
	BreakerState(state string)
}

// Resilient wraps a Model with retries (exponential backoff with full
// jitter, honouring Retry-After), a retry budget and a circuit breaker.
type Resilient struct {
	next    Model
	p       Policy
	cb      *gobreaker.CircuitBreaker[Response]
	budget  *retryBudget
	obs     Observer
	sleep   func(ctx context.Context, d time.Duration) error
	randInt func(n int64) int64
}

// NewResilient wraps next. obs may be nil.
func NewResilient(next Model, p Policy, obs Observer) *Resilient {
	r := &Resilient{next: next, p: p, budget: newRetryBudget(p.RetryBudget, 10), obs: obs, sleep: sleepCtx, randInt: rand.Int64N}
	r.cb = gobreaker.NewCircuitBreaker[Response](gobreaker.Settings{
		Name:        "llm",
		MaxRequests: 1,
		Timeout:     p.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= p.BreakerFailures },
		// A request the API refuses for what it is (400, 401…) says nothing
		// about the API's health; a cancelled call neither.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		IsSuccessful: func(err error) bool {
			return err == nil || IsPermanent(err)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if obs != nil {
				obs.BreakerState(to.String())
			}
		},
	})
	return r
}

// Name is the wrapped model's.
func (r *Resilient) Name() string { return r.next.Name() }

// BreakerState is "closed", "half-open" or "open".
func (r *Resilient) BreakerState() string { return r.cb.State().String() }

// Complete calls the model until it answers, fails permanently, the breaker
// opens, or attempts or budget run out.
func (r *Resilient) Complete(ctx context.Context, req Request) (Response, error) {
	return r.call(ctx, func(actx context.Context) (Response, error) { return r.next.Complete(actx, req) })
}

func (r *Resilient) call(ctx context.Context, do func(ctx context.Context) (Response, error)) (Response, error) {
	span := trace.SpanFromContext(ctx)
	r.budget.deposit()
	for attempt := 1; ; attempt++ {
		actx, holder := withRetryAfter(ctx)
		resp, err := r.cb.Execute(func() (Response, error) { return do(actx) })
		switch {
		case err == nil:
			return resp, nil
		case errors.Is(err, gobreaker.ErrOpenState):
			return Response{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		case errors.Is(err, gobreaker.ErrTooManyRequests) && attempt < r.p.MaxAttempts:
			// Half-open: one trial call is deciding; wait for its outcome
			// rather than fail this message. Costs no retry budget.
			if err := r.sleep(ctx, r.backoff(attempt)); err != nil {
				return Response{}, err
			}
			continue
		case errors.Is(err, gobreaker.ErrTooManyRequests):
			return Response{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		case IsPermanent(err), ctx.Err() != nil:
			return Response{}, err
		case attempt >= r.p.MaxAttempts:
			return Response{}, fmt.Errorf("%w (%d attempts): %w", ErrExhausted, attempt, err)
		case !r.budget.withdraw():
			return Response{}, fmt.Errorf("%w (retry budget spent): %w", ErrExhausted, err)
		}
		delay := r.backoff(attempt)
		if ra := holder.get(); ra > delay {
			delay = min(ra, r.p.MaxDelay)
		}
		class := ErrorClass(err)
		if r.obs != nil {
			r.obs.Retry(class)
		}
		span.AddEvent("llm.retry", trace.WithAttributes(
			attribute.Int("retry.attempt", attempt), attribute.String("error.class", class),
			attribute.String("retry.delay", delay.String()), attribute.String("error.message", err.Error())))
		if err := r.sleep(ctx, delay); err != nil {
			return Response{}, err
		}
	}
}

// backoff is exponential with full jitter: uniform in [base, base*2^(n-1)],
// capped at MaxDelay.
func (r *Resilient) backoff(attempt int) time.Duration {
	ceil := r.p.BaseDelay << min(attempt-1, 20)
	if ceil > r.p.MaxDelay || ceil <= 0 {
		ceil = r.p.MaxDelay
	}
	span := int64(ceil - r.p.BaseDelay)
	if span <= 0 {
		return r.p.BaseDelay
	}
	return r.p.BaseDelay + time.Duration(r.randInt(span+1))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryBudget allows retries up to ratio × calls, plus a small reserve so a
// quiet service can still retry.
type retryBudget struct {
	mu     sync.Mutex
	tokens float64
	ratio  float64
	max    float64
}

func newRetryBudget(ratio, reserve float64) *retryBudget {
	return &retryBudget{tokens: reserve, ratio: ratio, max: reserve}
}

func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.tokens = min(b.tokens+b.ratio, b.max)
	b.mu.Unlock()
}

func (b *retryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
