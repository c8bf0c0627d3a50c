package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Target is one model a Router may ask. Name is its label in metrics and
// spans: targets are configured, so the names are bounded; they must be
// distinct.
type Target struct {
	Name  string
	Model Model
}

// RouterObserver hears, by target name, what a Router and its targets'
// clients do, for metrics.
type RouterObserver interface {
	// Retry: a call to target is retried after an error of class.
	Retry(target, class string)
	// BreakerState: target's breaker is now "closed", "half-open" or "open".
	BreakerState(target, state string)
	// Fallback: the router left target after an error of class and asks
	// the next one.
	Fallback(target, class string)
}

// Router asks an ordered list of targets, each behind its own Resilient
// (its own retries, budget and breaker), and returns the first answer. It
// moves on to the next target when one is rate limited, failing,
// unreachable or timing out, when its breaker is open, or when it refuses
// the service itself (401, 403, 404: its key, its permission, its model
// name), which another endpoint with another key may not. It never moves on
// from a request refused for what it is (400, 422, a content policy): that
// fails the same everywhere, and trying elsewhere would route around a
// provider's refusal. Nor from a streamed answer that already sent text:
// the user would see two answers spliced together.
//
// This is LiteLLM's router reduced to what one ordered list needs: its
// per-deployment cooldown after allowed_fails is each target's breaker
// (LLM_BREAKER_FAILURES, LLM_BREAKER_OPEN_FOR); its immediate cooldown of
// a deployment that answers a non-retryable 401 or 404 is coolUntil. Its
// failure-rate trigger, weighted picks and per-error fallback lists are
// left out.
type Router struct {
	targets  []*routeTarget
	cooldown time.Duration
	now      func() time.Time
	obs      atomic.Pointer[routerObs]
}

type routerObs struct{ RouterObserver }

type routeTarget struct {
	name  string
	model *Resilient
	// coolUntil (unix nanoseconds) passes the target over after it refused
	// the service itself: permanent errors do not count against a breaker,
	// and every message would otherwise pay a round trip to learn it again.
	coolUntil atomic.Int64
}

// NewRouter routes over targets (at least one) in order under policy p.
// Every target but the last makes one attempt per call: the next target is
// its retry, as LiteLLM's router sends a rate-limited call to a fallback
// rather than waiting when one is configured. The last target retries
// under p, so a router of one target is a Resilient.
func NewRouter(targets []Target, p Policy) *Router {
	r := &Router{cooldown: p.BreakerOpenFor, now: time.Now}
	for i, t := range targets {
		tp := p
		if i < len(targets)-1 {
			tp.MaxAttempts = 1
		}
		rt := &routeTarget{name: t.Name}
		rt.model = NewResilient(t.Model, tp, targetObserver{r: r, target: t.Name})
		r.targets = append(r.targets, rt)
	}
	return r
}

// Observe sends what the router does to obs from now on, starting with
// every target's breaker state so that gauges begin right.
func (r *Router) Observe(obs RouterObserver) {
	r.obs.Store(&routerObs{obs})
	for _, t := range r.targets {
		obs.BreakerState(t.name, t.model.BreakerState())
	}
}

func (r *Router) observer() RouterObserver {
	if o := r.obs.Load(); o != nil {
		return o.RouterObserver
	}
	return nil
}

// Name is the first target's model: the one asked when all is well.
func (r *Router) Name() string { return r.targets[0].model.Name() }

// Targets are the targets' names, in order.
func (r *Router) Targets() []string {
	out := make([]string, len(r.targets))
	for i, t := range r.targets {
		out[i] = t.name
	}
	return out
}

// Complete asks the targets in order until one answers.
func (r *Router) Complete(ctx context.Context, req Request) (Response, error) {
	return r.route(ctx, func(ctx context.Context, m *Resilient) (Response, error) {
		return m.Complete(ctx, req)
	}, func() bool { return false })
}

// Stream is Complete with the answer streamed; once a target has sent text
// the answer is that target's, whatever happens next.
func (r *Router) Stream(ctx context.Context, req Request, onDelta func(string)) (Response, error) {
	var sent atomic.Bool
	emit := func(d string) { sent.Store(true); onDelta(d) }
	return r.route(ctx, func(ctx context.Context, m *Resilient) (Response, error) {
		return m.Stream(ctx, req, emit)
	}, sent.Load)
}

func (r *Router) route(ctx context.Context, call func(context.Context, *Resilient) (Response, error), started func() bool) (Response, error) {
	var failed []*TargetError
	for i, t := range r.targets {
		resp, err := r.try(ctx, t, call)
		if err == nil {
			resp.Target = t.name
			if resp.Model == "" {
				resp.Model = t.model.Name()
			}
			return resp, nil
		}
		failed = append(failed, &TargetError{Target: t.name, Err: err})
		if started() || ctx.Err() != nil || !fallsBack(err) {
			break
		}
		if i < len(r.targets)-1 {
			r.leave(ctx, t, err)
		}
	}
	return Response{}, routeError(failed)
}

// try calls t unless it is cooling down after it refused the service.
func (r *Router) try(ctx context.Context, t *routeTarget, call func(context.Context, *Resilient) (Response, error)) (Response, error) {
	if until := t.coolUntil.Load(); until > r.now().UnixNano() {
		return Response{}, fmt.Errorf("%w: passed over until %s after it refused the service",
			ErrUnavailable, time.Unix(0, until).UTC().Format(time.RFC3339))
	}
	resp, err := call(ctx, t.model)
	if err != nil && len(r.targets) > 1 && refusesService(err) {
		// Alone, a target is asked whatever it answers: passing it over
		// would turn its error into "unavailable" for everyone.
		t.coolUntil.Store(r.now().Add(r.cooldown).UnixNano())
	}
	return resp, err
}

// leave records that the call moves on from t after err.
func (r *Router) leave(ctx context.Context, t *routeTarget, err error) {
	class := ErrorClass(err)
	if obs := r.observer(); obs != nil {
		obs.Fallback(t.name, class)
	}
	trace.SpanFromContext(ctx).AddEvent("llm.fallback", trace.WithAttributes(
		attribute.String("llm.target", t.name), attribute.String("error.class", class),
		attribute.String("error.message", err.Error())))
}

// fallsBack says whether another target may answer what this one did not:
// anything not permanent (rate limited, failing, unreachable, timed out,
// breaker open, retries spent), and a refusal of the service itself.
func fallsBack(err error) bool {
	return !IsPermanent(err) || refusesService(err)
}

// refusesService is a permanent error about the target rather than the
// request: its key (401), its permission (403), its model name (404).
func refusesService(err error) bool {
	switch httpStatus(err) {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return true
	}
	return false
}

func httpStatus(err error) int {
	if apiErr, ok := errors.AsType[*openai.APIError](err); ok {
		return apiErr.HTTPStatusCode
	}
	if reqErr, ok := errors.AsType[*openai.RequestError](err); ok {
		return reqErr.HTTPStatusCode
	}
	return 0
}

// TargetError is one target's failure, named.
type TargetError struct {
	Target string
	Err    error
}

func (e *TargetError) Error() string { return e.Target + ": " + e.Err.Error() }
func (e *TargetError) Unwrap() error { return e.Err }

// FailedTarget names the target whose error err is (for a call that tried
// several, the one that decides what the caller does), or "".
func FailedTarget(err error) string {
	if te, ok := errors.AsType[*TargetError](err); ok {
		return te.Target
	}
	return ""
}

// RouteError is a call every target it tried failed. It unwraps to Cause:
// the first failure worth retrying, or the first failure when none is, so
// a message is given up as permanent only when no target may answer it
// later.
type RouteError struct {
	Cause *TargetError
	Tried []*TargetError
}

func (e *RouteError) Error() string {
	parts := make([]string, len(e.Tried))
	for i, t := range e.Tried {
		parts[i] = t.Error()
	}
	return fmt.Sprintf("no model answered (%d tried): %s", len(e.Tried), strings.Join(parts, "; "))
}

func (e *RouteError) Unwrap() error { return e.Cause }

func routeError(failed []*TargetError) error {
	if len(failed) == 1 {
		return failed[0]
	}
	cause := failed[0]
	for _, f := range failed {
		if !IsPermanent(f) {
			cause = f
			break
		}
	}
	return &RouteError{Cause: cause, Tried: failed}
}

// targetObserver is a target's Resilient's Observer: it names the target
// to the router's observer, which may be set after the router is built.
type targetObserver struct {
	r      *Router
	target string
}

func (o targetObserver) Retry(class string) {
	if obs := o.r.observer(); obs != nil {
		obs.Retry(o.target, class)
	}
}

func (o targetObserver) BreakerState(state string) {
	if obs := o.r.observer(); obs != nil {
		obs.BreakerState(o.target, state)
	}
}
