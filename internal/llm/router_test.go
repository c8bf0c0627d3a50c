package llm

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// routeFake is a target model: it fails with the queued errors (after
// streaming the queued pieces of text, when streamed), then answers.
type routeFake struct {
	name string
	mu   sync.Mutex
	errs []error
	sent []string // streamed before the first queued error
	n    int
}

func (f *routeFake) Name() string { return f.name }

func (f *routeFake) Complete(context.Context, Request) (Response, error) {
	return f.Stream(context.Background(), Request{}, func(string) {})
}

func (f *routeFake) Stream(_ context.Context, _ Request, onDelta func(string)) (Response, error) {
	f.mu.Lock()
	f.n++
	var err error
	var sent []string
	if len(f.errs) > 0 {
		err, f.errs, sent, f.sent = f.errs[0], f.errs[1:], f.sent, nil
	}
	f.mu.Unlock()
	for _, d := range sent {
		onDelta(d)
	}
	if err != nil {
		return Response{}, err
	}
	onDelta("answer of " + f.name)
	return Response{Content: "answer of " + f.name}, nil
}

func (f *routeFake) calls() int { f.mu.Lock(); defer f.mu.Unlock(); return f.n }

// routeEvents records what a router reports.
type routeEvents struct {
	mu        sync.Mutex
	fallbacks []string // target/class
	states    []string // target/state
	retries   []string
}

func (e *routeEvents) add(to *[]string, target, what string) {
	e.mu.Lock()
	*to = append(*to, target+"/"+what)
	e.mu.Unlock()
}
func (e *routeEvents) Retry(target, class string)        { e.add(&e.retries, target, class) }
func (e *routeEvents) BreakerState(target, state string) { e.add(&e.states, target, state) }
func (e *routeEvents) Fallback(target, class string)     { e.add(&e.fallbacks, target, class) }

func (e *routeEvents) get(of *[]string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(*of, " ")
}

func apiError(status int) error {
	return classify(&openai.APIError{HTTPStatusCode: status, Message: "refused"})
}

func routePolicy() Policy {
	return Policy{MaxAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, RetryBudget: 1, BreakerFailures: 100, BreakerOpenFor: time.Minute}
}

// newRoute routes over fakes named a, b, c… under p.
func newRoute(p Policy, n int) (*Router, []*routeFake, *routeEvents) {
	var fakes []*routeFake
	var targets []Target
	for i := range n {
		f := &routeFake{name: string(rune('a' + i))}
		fakes = append(fakes, f)
		targets = append(targets, Target{Name: f.name + "@target", Model: f})
	}
	r := NewRouter(targets, p)
	ev := &routeEvents{}
	r.Observe(ev)
	return r, fakes, ev
}

func TestRouterFallsBackInOrder(t *testing.T) {
	transport := errors.New("connection refused")
	tests := []struct {
		name          string
		errs          [][]error // per target
		wantTarget    string
		wantCalls     []int
		wantFallbacks string
	}{
		{name: "the first answers", wantTarget: "a@target", wantCalls: []int{1, 0, 0}},
		{name: "rate limited: next, at once", errs: [][]error{{apiError(429)}}, wantTarget: "b@target", wantCalls: []int{1, 1, 0}, wantFallbacks: "a@target/rate_limited"},
		{name: "server error and unreachable: the third", errs: [][]error{{apiError(503)}, {transport}}, wantTarget: "c@target", wantCalls: []int{1, 1, 1}, wantFallbacks: "a@target/server b@target/transport"},
		{name: "a revoked key: next", errs: [][]error{{apiError(401)}}, wantTarget: "b@target", wantCalls: []int{1, 1, 0}, wantFallbacks: "a@target/auth"},
		{name: "an unknown model: next", errs: [][]error{{apiError(404)}}, wantTarget: "b@target", wantCalls: []int{1, 1, 0}, wantFallbacks: "a@target/client"},
		{name: "the last one retries", errs: [][]error{{apiError(503)}, {apiError(503)}, {apiError(502)}}, wantTarget: "c@target", wantCalls: []int{1, 1, 2}, wantFallbacks: "a@target/server b@target/server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, fakes, ev := newRoute(routePolicy(), 3)
			for i, errs := range tc.errs {
				fakes[i].errs = errs
			}
			resp, err := r.Complete(context.Background(), Request{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Target != tc.wantTarget || resp.Model != strings.TrimSuffix(tc.wantTarget, "@target") {
				t.Errorf("answered by target %q model %q, want %s", resp.Target, resp.Model, tc.wantTarget)
			}
			for i, f := range fakes {
				if f.calls() != tc.wantCalls[i] {
					t.Errorf("target %s called %d times, want %d", f.name, f.calls(), tc.wantCalls[i])
				}
			}
			if got := ev.get(&ev.fallbacks); got != tc.wantFallbacks {
				t.Errorf("fallbacks %q, want %q", got, tc.wantFallbacks)
			}
		})
	}
}

// A request refused for what it is fails the same everywhere: no fallback,
// and the error is the first target's, permanent.
func TestRouterDoesNotFallBackFromABadRequest(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnprocessableEntity} {
		r, fakes, ev := newRoute(routePolicy(), 2)
		fakes[0].errs = []error{apiError(status)}
		_, err := r.Complete(context.Background(), Request{})
		if !IsPermanent(err) || FailedTarget(err) != "a@target" {
			t.Errorf("%d: error %v (target %q), want a's permanent error", status, err, FailedTarget(err))
		}
		if fakes[1].calls() != 0 || ev.get(&ev.fallbacks) != "" {
			t.Errorf("%d: the fallback was asked (%d calls, events %q)", status, fakes[1].calls(), ev.get(&ev.fallbacks))
		}
	}
}

// An open breaker sends calls to the next target without asking the first.
func TestRouterSkipsATargetWhoseBreakerIsOpen(t *testing.T) {
	p := routePolicy()
	p.BreakerFailures = 1
	r, fakes, ev := newRoute(p, 2)
	fakes[0].errs = []error{apiError(503)}
	for range 3 {
		resp, err := r.Complete(context.Background(), Request{})
		if err != nil || resp.Target != "b@target" {
			t.Fatalf("answer %+v, error %v; want b's answer", resp, err)
		}
	}
	if fakes[0].calls() != 1 {
		t.Errorf("the open target was called %d times, want 1 (the call that opened it)", fakes[0].calls())
	}
	want := "a@target/server a@target/circuit_open a@target/circuit_open"
	if got := ev.get(&ev.fallbacks); got != want {
		t.Errorf("fallbacks %q, want %q", got, want)
	}
	if got := ev.get(&ev.states); got != "a@target/closed b@target/closed a@target/open" {
		t.Errorf("breaker states %q", got)
	}
}

// A target that refused the service (a revoked key) is passed over for the
// cooldown, then asked again; alone, it is asked every time.
func TestRouterCoolsDownATargetThatRefusedTheService(t *testing.T) {
	r, fakes, _ := newRoute(routePolicy(), 2)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	fakes[0].errs = []error{apiError(401)}
	for range 2 {
		if resp, err := r.Complete(context.Background(), Request{}); err != nil || resp.Target != "b@target" {
			t.Fatalf("answer %+v, error %v; want b's", resp, err)
		}
	}
	if fakes[0].calls() != 1 {
		t.Errorf("the refusing target was called %d times during its cooldown, want 1", fakes[0].calls())
	}
	now = now.Add(routePolicy().BreakerOpenFor + time.Second)
	if resp, err := r.Complete(context.Background(), Request{}); err != nil || resp.Target != "a@target" {
		t.Fatalf("after the cooldown: answer %+v, error %v; want a's", resp, err)
	}

	alone, fakes, _ := newRoute(routePolicy(), 1)
	fakes[0].errs = []error{apiError(401), apiError(401)}
	for range 2 {
		if _, err := alone.Complete(context.Background(), Request{}); !IsPermanent(err) {
			t.Fatalf("error %v, want the target's own permanent error", err)
		}
	}
	if fakes[0].calls() != 2 {
		t.Errorf("a lone target was called %d times, want 2", fakes[0].calls())
	}
}

// When every target fails, the error says so for each and is retryable if
// any target may answer later.
func TestRouterAllFail(t *testing.T) {
	r, fakes, _ := newRoute(routePolicy(), 2)
	fakes[0].errs = []error{apiError(401)}
	fakes[1].errs = []error{apiError(503), apiError(503)}
	_, err := r.Complete(context.Background(), Request{})
	if !errors.Is(err, ErrExhausted) || IsPermanent(err) || FailedTarget(err) != "b@target" {
		t.Fatalf("error %v (target %q), want b's exhausted retries, not permanent", err, FailedTarget(err))
	}
	if msg := err.Error(); !strings.Contains(msg, "a@target: ") || !strings.Contains(msg, "b@target: ") {
		t.Errorf("error %q does not name both targets", msg)
	}
}

// A caller that gave up is not passed on to the next target.
func TestRouterStopsWhenTheCallerGaveUp(t *testing.T) {
	r, fakes, _ := newRoute(routePolicy(), 2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fakes[0].errs = []error{context.Canceled}
	if _, err := r.Complete(ctx, Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want canceled", err)
	}
	if fakes[1].calls() != 0 {
		t.Error("the next target was asked for a caller that gave up")
	}
}

func TestRouterStream(t *testing.T) {
	t.Run("fails before any text: the next target streams", func(t *testing.T) {
		r, fakes, _ := newRoute(routePolicy(), 2)
		fakes[0].errs = []error{apiError(429)}
		var got []string
		resp, err := r.Stream(context.Background(), Request{}, func(d string) { got = append(got, d) })
		if err != nil || resp.Target != "b@target" || strings.Join(got, "") != "answer of b" {
			t.Fatalf("answer %+v, error %v, streamed %q; want b's answer alone", resp, err, got)
		}
	})
	// Whatever the error: a cut connection, or one that would send a call
	// that has not started to the next target (a refusal of the service).
	for name, cut := range map[string]error{"cut": errors.New("connection reset"), "refused": apiError(http.StatusForbidden)} {
		t.Run("fails after text, "+name+": no other model", func(t *testing.T) {
			r, fakes, ev := newRoute(routePolicy(), 2)
			fakes[0].errs, fakes[0].sent = []error{cut}, []string{"Hel"}
			var got []string
			_, err := r.Stream(context.Background(), Request{}, func(d string) { got = append(got, d) })
			if err == nil || FailedTarget(err) != "a@target" {
				t.Fatalf("error %v (target %q), want a's", err, FailedTarget(err))
			}
			if fakes[1].calls() != 0 || strings.Join(got, "") != "Hel" || ev.get(&ev.fallbacks) != "" {
				t.Errorf("switched models mid-answer: next called %d times, streamed %q", fakes[1].calls(), got)
			}
		})
	}
}
