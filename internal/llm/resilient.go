package llm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Policy says how a call waits for the model: until its answer deadline,
// retrying with backoff, within a retry budget, behind a circuit breaker.
//
// Why wait rather than fail fast: the message is durable in Kafka and a
// chat user would rather wait ten seconds than get an error for a hiccup.
// A waiting call holds its message's lane and in-flight place, but no model
// slot, no quota and no connection (Wait.Acquire is taken per request).
//
// The bounds:
//
//   - Per message: waiting ends at the answer deadline (ANSWER_DEADLINE from
//     the message's acceptance, Wait.Until); then the call fails with
//     ErrExhausted, or ErrUnavailable if the breaker refused it last. A
//     request in flight is not cut at the deadline (it may be answering,
//     or streaming); OPENAI_TIMEOUT bounds it, so an error comes at most
//     that much after the deadline. A call that starts after its deadline
//     (a backlog) still makes one request if the breaker lets it: the
//     deadline bounds waiting, it does not refuse an answer that is ready.
//     The delays follow cenkalti/backoff (LLM_RETRY_BASE_DELAY doubling to
//     LLM_RETRY_MAX_DELAY, ±50% jitter), never shorter than Retry-After.
//   - Toward a failing provider, per instance: while the breaker is open,
//     at most LLM_BREAKER_PROBES requests per LLM_BREAKER_OPEN_FOR (3 a
//     second by default), whatever number of calls wait. While it is
//     closed, LLM_BREAKER_FAILURES failures in a row open it; below that,
//     the retry budget caps retries at LLM_RETRY_BUDGET of the calls made,
//     plus one a second and a burst of 10, so requests stay under
//     (1 + LLM_RETRY_BUDGET) × calls + 1/s (1.2 × the message rate by
//     default). A retry the budget refuses waits; it does not fail. When
//     the breaker closes again (its probes answered), the calls waiting on
//     it go, spread over one LLM_BREAKER_OPEN_FOR, without asking the
//     budget: the provider has just answered, and if it fails them the
//     breaker opens again after LLM_BREAKER_FAILURES of them. LLM_MAX_CONCURRENCY
//     (Wait.Acquire) bounds the requests in flight at any time.
type Policy struct {
	AnswerDeadline time.Duration `env:"ANSWER_DEADLINE" envDefault:"60s"`
	BaseDelay      time.Duration `env:"LLM_RETRY_BASE_DELAY" envDefault:"250ms"`
	// MaxDelay caps the backoff between one call's requests: with the
	// breaker signalling recovery, a long delay only slows a call down
	// after a partial failure, which the budget already bounds.
	MaxDelay time.Duration `env:"LLM_RETRY_MAX_DELAY" envDefault:"5s"`
	// RetryBudget caps retries at this fraction of calls (see above).
	RetryBudget float64 `env:"LLM_RETRY_BUDGET" envDefault:"0.2"`
	// BreakerFailures failures in a row open the breaker for
	// BreakerOpenFor; then up to BreakerProbes requests go through
	// (half-open): that many answers in a row close it, one failure opens
	// it again. One second and three probes: a recovered model is noticed
	// within a second or two, and a still-failing one costs three requests
	// a second.
	BreakerFailures uint32        `env:"LLM_BREAKER_FAILURES" envDefault:"5"`
	BreakerOpenFor  time.Duration `env:"LLM_BREAKER_OPEN_FOR" envDefault:"1s"`
	BreakerProbes   uint32        `env:"LLM_BREAKER_PROBES" envDefault:"3"`
	// MaxAttempts, when positive, makes calls that do not wait: one ends
	// after that many failed requests, at the first breaker refusal or
	// when the budget refuses a retry (llm.Router sets 1 on the models it
	// may leave for the next one). Zero: the deadline bounds the call.
	MaxAttempts int
}

// Validate checks the policy.
func (p Policy) Validate() error {
	switch {
	case p.AnswerDeadline <= 0:
		return errors.New("ANSWER_DEADLINE: must be positive")
	case p.MaxAttempts < 0:
		return errors.New("llm: MaxAttempts must not be negative")
	case p.BaseDelay <= 0 || p.MaxDelay < p.BaseDelay:
		return errors.New("LLM_RETRY_BASE_DELAY/LLM_RETRY_MAX_DELAY: need 0 < base <= max")
	case p.RetryBudget < 0 || p.RetryBudget > 1:
		return errors.New("LLM_RETRY_BUDGET: must be between 0 and 1")
	case p.BreakerFailures < 1:
		return errors.New("LLM_BREAKER_FAILURES: must be at least 1")
	case p.BreakerOpenFor <= 0:
		return errors.New("LLM_BREAKER_OPEN_FOR: must be positive")
	case p.BreakerProbes < 1:
		return errors.New("LLM_BREAKER_PROBES: must be at least 1")
	}
	return nil
}

// ErrUnavailable: the breaker refused the call's last try (it was open);
// ErrExhausted: the call's requests failed until its deadline, its
// attempts or its retry budget ran out.
var (
	ErrUnavailable = errors.New("model temporarily unavailable (circuit open)")
	ErrExhausted   = errors.New("model call failed after retries")
)

// Why a call waits, as Wait.Notify hears it.
const (
	WaitRateLimited = "rate_limited" // the model answered 429
	WaitFailing     = "failing"      // 5xx, a timeout, the connection
	WaitBreakerOpen = "breaker_open" // refused without a request
)

// Wait is what one call's caller says about its waiting (WithWait).
type Wait struct {
	// Until is the answer deadline; zero: Policy.AnswerDeadline from the
	// call's start.
	Until time.Time
	// Notify, when set, hears each time the call starts waiting, and why
	// (WaitRateLimited, WaitFailing, WaitBreakerOpen), on the calling
	// goroutine.
	Notify func(reason string)
	// Acquire, when set, is called before each request and the returned
	// function after it: the caller's model slot and quota are held per
	// request, never while the call waits. Its error ends the call as is
	// (nothing was sent, so the breaker does not count it).
	Acquire func(ctx context.Context) (release func(), err error)
}

type waitKey struct{}

// WithWait gives the calls made with ctx their deadline and hooks.
func WithWait(ctx context.Context, w Wait) context.Context {
	return context.WithValue(ctx, waitKey{}, w)
}

// Observer receives what the resilient client does, for metrics.
type Observer interface {
	Retry(class string)
	BreakerState(state string)
}

// Resilient wraps a Model with retries, a retry budget and a circuit
// breaker, waiting for the model within each call's deadline (Policy).
type Resilient struct {
	next    Model
	p       Policy
	cb      *gobreaker.CircuitBreaker[Response]
	news    *breakerNews
	budget  *retryBudget
	obs     Observer
	randInt func(n int64) int64
}

// NewResilient wraps next. obs may be nil.
func NewResilient(next Model, p Policy, obs Observer) *Resilient {
	r := &Resilient{next: next, p: p, news: newBreakerNews(), budget: newRetryBudget(p.RetryBudget, time.Now()), obs: obs, randInt: rand.Int64N}
	r.cb = gobreaker.NewCircuitBreaker[Response](gobreaker.Settings{
		Name:        "llm",
		MaxRequests: p.BreakerProbes,
		Timeout:     p.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= p.BreakerFailures },
		// A cancelled call, or one that never left (Wait.Acquire failed),
		// says nothing about the API's health.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) || isNotSent(err) },
		// A request the API refuses for what it is (400, 401…) neither.
		IsSuccessful: func(err error) bool { return err == nil || IsPermanent(err) },
		// Runs under the breaker's lock: news has its own.
		OnStateChange: func(_ string, _, to gobreaker.State) {
			r.news.set(to, p.BreakerOpenFor)
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

// Complete calls the model until it answers, fails permanently, or the
// call's deadline (or attempts) run out.
func (r *Resilient) Complete(ctx context.Context, req Request) (Response, error) {
	return r.call(ctx, func(actx context.Context) (Response, error) { return r.next.Complete(actx, req) })
}

// call makes requests with do until one answers or the call gives up;
// waiting between them is call.wait's.
func (r *Resilient) call(ctx context.Context, do func(ctx context.Context) (Response, error)) (Response, error) {
	c := r.newCall(ctx)
	r.budget.deposit(time.Now())
	for {
		if err := c.awaitBudget(ctx); err != nil {
			return Response{}, err
		}
		actx, holder := withRetryAfter(ctx)
		resp, err := r.cb.Execute(func() (Response, error) { return c.send(actx, do) })
		if err == nil {
			return resp, nil
		}
		until, reason, err := c.after(ctx, err, holder.get())
		if err != nil {
			return Response{}, err
		}
		if err := c.wait(ctx, until, reason); err != nil {
			return Response{}, err
		}
	}
}

// notSent is the error of a request that never left: Wait.Acquire failed.
type notSent struct{ err error }

func (e notSent) Error() string { return "model request not sent: " + e.err.Error() }
func (e notSent) Unwrap() error { return e.err }

func isNotSent(err error) bool {
	_, ok := errors.AsType[notSent](err)
	return ok
}

// modelCall is one call's state across its requests and waits.
type modelCall struct {
	r        *Resilient
	w        Wait
	deadline time.Time // zero: none (MaxAttempts bounds the call)
	b        *backoff.ExponentialBackOff
	span     trace.Span
	failures int   // requests that failed
	failed   error // the last one's error
	closes   uint64
	refused  error // the breaker's refusal, when it refused the last try
}

func (r *Resilient) newCall(ctx context.Context) *modelCall {
	w, _ := ctx.Value(waitKey{}).(Wait)
	c := &modelCall{r: r, w: w, deadline: w.Until, span: trace.SpanFromContext(ctx)}
	if c.deadline.IsZero() && r.p.AnswerDeadline > 0 {
		c.deadline = time.Now().Add(r.p.AnswerDeadline)
	}
	return c
}

// send makes one request, holding the caller's slot for it.
func (c *modelCall) send(ctx context.Context, do func(ctx context.Context) (Response, error)) (Response, error) {
	if c.w.Acquire != nil {
		release, err := c.w.Acquire(ctx)
		if err != nil {
			return Response{}, notSent{err}
		}
		defer release()
	}
	return do(ctx)
}

// after decides what a failed try leads to: the time of the next one and
// why the call waits for it, or the error that ends the call.
func (c *modelCall) after(ctx context.Context, err error, retryAfter time.Duration) (time.Time, string, error) {
	now := time.Now()
	switch {
	case ctx.Err() != nil, IsPermanent(err):
		return time.Time{}, "", err
	case isNotSent(err):
		return time.Time{}, "", errors.Unwrap(err)
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		c.refused = err
		if c.r.p.MaxAttempts > 0 {
			return time.Time{}, "", c.giveUp()
		}
		// Open: until a probe may go. Half-open with its probes out: until
		// they tell (a state change wakes the wait), or one open period.
		until := now.Add(c.r.p.BreakerOpenFor)
		if errors.Is(err, gobreaker.ErrOpenState) {
			until = now.Add(max(time.Until(c.r.news.view().openTill), time.Millisecond))
		}
		return until, WaitBreakerOpen, nil
	}
	c.refused, c.failed, c.failures = nil, err, c.failures+1
	c.closes = c.r.news.view().closes
	if c.r.p.MaxAttempts > 0 && c.failures >= c.r.p.MaxAttempts {
		return time.Time{}, "", c.giveUp()
	}
	if c.b == nil {
		c.b = backoff.NewExponentialBackOff()
		c.b.InitialInterval, c.b.MaxInterval, c.b.Multiplier = c.r.p.BaseDelay, c.r.p.MaxDelay, 2
	}
	delay := max(c.b.NextBackOff(), retryAfter)
	class := ErrorClass(err)
	if c.deadline.IsZero() || now.Add(delay).Before(c.deadline) {
		if c.r.obs != nil {
			c.r.obs.Retry(class)
		}
		c.span.AddEvent("llm.retry", trace.WithAttributes(
			attribute.Int("retry.attempt", c.failures), attribute.String("error.class", class),
			attribute.String("retry.delay", delay.String()), attribute.String("error.message", err.Error())))
	}
	return now.Add(delay), waitReason(class), nil
}

func waitReason(class string) string {
	if class == "rate_limited" {
		return WaitRateLimited
	}
	return WaitFailing
}

// giveUp is the call's error when it stops waiting.
func (c *modelCall) giveUp() error {
	if c.refused != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, c.refused)
	}
	return fmt.Errorf("%w (%d attempts): %w", ErrExhausted, c.failures, c.failed)
}

// awaitBudget takes a retry from the budget before a request that repeats
// a failed one while the breaker stayed closed; without one, the call
// waits as for a backoff. A retry after the breaker re-closed is free (see
// Policy), and with the breaker not closed it decides alone.
func (c *modelCall) awaitBudget(ctx context.Context) error {
	for c.failed != nil && c.refused == nil {
		v := c.r.news.view()
		if v.state != gobreaker.StateClosed || v.closes != c.closes || c.r.budget.withdraw(time.Now()) {
			return nil
		}
		if c.r.p.MaxAttempts > 0 {
			return fmt.Errorf("%w (retry budget spent): %w", ErrExhausted, c.failed)
		}
		if err := c.wait(ctx, time.Now().Add(c.b.NextBackOff()), waitReason(ErrorClass(c.failed))); err != nil {
			return err
		}
	}
	return nil
}

// wait sleeps until the next try at until, or gives up at the deadline if
// that comes first. The breaker closing (its probes answered: the model is
// back) brings the next try forward to a random moment within one open
// period, so the calls that waited go within a second or two of the
// recovery without all going at once. It holds nothing but a timer.
func (c *modelCall) wait(ctx context.Context, until time.Time, reason string) error {
	if !c.deadline.IsZero() && until.After(c.deadline) && !time.Now().Before(c.deadline) {
		return c.giveUp()
	}
	if c.w.Notify != nil {
		c.w.Notify(reason)
	}
	for {
		v := c.r.news.view()
		if v.state == gobreaker.StateOpen && v.openTill.Before(until) {
			// While the breaker is open its probes set the pace, not this
			// call's backoff: its tries cost nothing until then, and a
			// call in a long backoff must not sleep through the recovery.
			until = v.openTill
		}
		end := until
		if !c.deadline.IsZero() && end.After(c.deadline) {
			end = c.deadline
		}
		d := time.Until(end)
		if d <= 0 {
			if end.Before(until) {
				return c.giveUp()
			}
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-v.changed:
			t.Stop()
			if c.r.news.view().state == gobreaker.StateClosed {
				spread := time.Duration(c.r.randInt(max(int64(c.r.p.BreakerOpenFor), 1)))
				if soon := time.Now().Add(spread); soon.Before(until) {
					until = soon
				}
			}
		}
	}
}

// breakerNews is what waiting calls learn from the breaker's state
// changes: gobreaker tells nobody when an open period ends or when the
// model answered a probe, and a waiting call must neither poll for it nor
// miss it.
type breakerNews struct {
	mu       sync.Mutex
	state    gobreaker.State
	changed  chan struct{} // closed and replaced at every change
	openTill time.Time     // when the open breaker lets probes through
	closes   uint64        // how many times it closed again
}

type breakerView struct {
	state    gobreaker.State
	changed  <-chan struct{}
	openTill time.Time
	closes   uint64
}

func newBreakerNews() *breakerNews { return &breakerNews{changed: make(chan struct{})} }

func (b *breakerNews) set(to gobreaker.State, openFor time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state = to
	switch to {
	case gobreaker.StateOpen:
		// gobreaker's own expiry is a moment earlier: a try at openTill
		// finds it half-open.
		b.openTill = time.Now().Add(openFor)
	case gobreaker.StateClosed:
		b.closes++
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *breakerNews) view() breakerView {
	b.mu.Lock()
	defer b.mu.Unlock()
	return breakerView{state: b.state, changed: b.changed, openTill: b.openTill, closes: b.closes}
}

// retryBudget allows retries up to ratio × calls, refilled by at least
// budgetFloor a second so a quiet service still retries, holding at most
// budgetBurst.
type retryBudget struct {
	mu     sync.Mutex
	tokens float64
	ratio  float64
	last   time.Time
}

const (
	budgetBurst = 10
	budgetFloor = 1.0 // retries a second
)

func newRetryBudget(ratio float64, now time.Time) *retryBudget {
	return &retryBudget{tokens: budgetBurst, ratio: ratio, last: now}
}

func (b *retryBudget) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*budgetFloor, budgetBurst)
		b.last = now
	}
}

func (b *retryBudget) deposit(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	b.tokens = min(b.tokens+b.ratio, budgetBurst)
}

func (b *retryBudget) withdraw(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
