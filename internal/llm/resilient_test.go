package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/fakeopenai"
)

// scripted fails with the queued errors, then answers.
type scripted struct {
	mu    sync.Mutex
	errs  []error
	calls int
}

func (s *scripted) Name() string { return "scripted" }
func (s *scripted) Complete(context.Context, Request) (Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return Response{}, err
	}
	return Response{Content: "ok"}, nil
}

func (s *scripted) called() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

type recorder struct {
	mu      sync.Mutex
	retries int
	states  []string
}

func (r *recorder) Retry(string) { r.mu.Lock(); r.retries++; r.mu.Unlock() }
func (r *recorder) BreakerState(s string) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
}

func (r *recorder) got() (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retries, strings.Join(r.states, " ")
}

var transient = errors.New("503")

// policy is the shipped policy with delays and periods of milliseconds.
func policy() Policy {
	return Policy{
		AnswerDeadline: 5 * time.Second, BaseDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond,
		RetryBudget: 1, BreakerFailures: 100, BreakerOpenFor: 100 * time.Millisecond, BreakerProbes: 3,
	}
}

func newTestResilient(m Model, p Policy, rec *recorder) *Resilient { return NewResilient(m, p, rec) }

func TestResilient(t *testing.T) {
	tests := []struct {
		name      string
		errs      []error
		policy    func(*Policy)
		wantErr   error
		wantCalls int
	}{
		{name: "answers", wantCalls: 1},
		{name: "transient then answers", errs: []error{transient, transient}, wantCalls: 3},
		{name: "permanent is not retried", errs: []error{fmt.Errorf("%w: 400", ErrPermanent)}, wantErr: ErrPermanent, wantCalls: 1},
		{name: "attempts, when limited, run out", errs: []error{transient, transient, transient, transient, transient},
			policy: func(p *Policy) { p.MaxAttempts = 4 }, wantErr: ErrExhausted, wantCalls: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := policy()
			if tc.policy != nil {
				tc.policy(&p)
			}
			m := &scripted{errs: tc.errs}
			rec := &recorder{}
			r := newTestResilient(m, p, rec)
			_, err := r.Complete(context.Background(), Request{})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			retries, _ := rec.got()
			if m.called() != tc.wantCalls || (tc.wantErr == nil && retries != tc.wantCalls-1) {
				t.Fatalf("calls %d retries %d, want %d calls", m.called(), retries, tc.wantCalls)
			}
		})
	}
}

// A model that keeps failing is retried until the call's deadline, and
// the call fails then, not earlier.
func TestResilientWaitsUntilTheDeadline(t *testing.T) {
	m := &scripted{errs: make([]error, 1000)}
	for i := range m.errs {
		m.errs[i] = transient
	}
	r := newTestResilient(m, policy(), &recorder{})
	var reasons []string
	until := time.Now().Add(400 * time.Millisecond)
	ctx := WithWait(context.Background(), Wait{Until: until, Notify: func(why string) { reasons = append(reasons, why) }})
	_, err := r.Complete(ctx, Request{})
	late := time.Since(until)
	if !errors.Is(err, ErrExhausted) || !errors.Is(err, transient) {
		t.Fatalf("err %v, want exhausted with the model's error", err)
	}
	if late < 0 || late > 100*time.Millisecond {
		t.Fatalf("gave up %v after the deadline, want at it", late)
	}
	if m.called() < 5 || len(reasons) < m.called()-1 || reasons[0] != WaitFailing {
		t.Fatalf("%d requests, waits %q: want retries all along, each a wait for a failing model", m.called(), reasons)
	}
}

// A call that starts after its deadline (a backlog) still gets its one
// request, but no retry.
func TestResilientPastTheDeadlineTriesOnce(t *testing.T) {
	m := &scripted{errs: []error{transient}}
	r := newTestResilient(m, policy(), &recorder{})
	ctx := WithWait(context.Background(), Wait{Until: time.Now().Add(-time.Minute)})
	if _, err := r.Complete(ctx, Request{}); !errors.Is(err, ErrExhausted) || m.called() != 1 {
		t.Fatalf("err %v after %d requests, want exhausted after 1", err, m.called())
	}
	if resp, err := r.Complete(ctx, Request{}); err != nil || resp.Content != "ok" {
		t.Fatalf("a healthy model past the deadline: %+v, %v", resp, err)
	}
}

// Retry-After from the real API (through go-openai) sets the delay.
func TestResilientHonoursRetryAfter(t *testing.T) {
	srv := fakeopenai.Start(t, fakeopenai.WithAPIKey("k"))
	srv.FailNext(1, http.StatusTooManyRequests, "1")
	var reasons []string
	ctx := WithWait(context.Background(), Wait{Notify: func(why string) { reasons = append(reasons, why) }})
	r := newTestResilient(NewOpenAI(OpenAIConfig{APIKey: "k", BaseURL: srv.BaseURL(), Model: "m"}), policy(), &recorder{})
	start := time.Now()
	if _, err := r.Complete(ctx, Request{Messages: []Message{{RoleUser, "hi"}}}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second || srv.Requests() != 2 {
		t.Fatalf("answered after %v and %d requests, want the retry a second later", took, srv.Requests())
	}
	if len(reasons) != 1 || reasons[0] != WaitRateLimited {
		t.Fatalf("waits %q, want one for a rate limit", reasons)
	}
}

// gated is a model that fails while down, recording each request with the
// breaker state it was sent under and how many were in flight.
type gated struct {
	r        *Resilient
	down     atomic.Bool
	mu       sync.Mutex
	sent     []string // breaker state per request
	inflight int
	maxHalf  int // requests in flight at once while half-open
}

func (g *gated) Name() string { return "gated" }
func (g *gated) Complete(context.Context, Request) (Response, error) {
	state := g.r.BreakerState()
	g.mu.Lock()
	g.sent = append(g.sent, state)
	g.inflight++
	if state == "half-open" {
		g.maxHalf = max(g.maxHalf, g.inflight)
	}
	g.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	g.mu.Lock()
	g.inflight--
	g.mu.Unlock()
	if g.down.Load() {
		return Response{}, transient
	}
	return Response{Content: "ok"}, nil
}

func (g *gated) requests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.sent...)
}

// While the model is down the breaker opens; the calls wait for it instead
// of failing, only its probes reach the model, and when the model is back a
// probe closes the breaker and every waiting call is answered within about
// two open periods.
func TestResilientBreakerProbesAndRecovers(t *testing.T) {
	p := policy()
	p.BreakerFailures = 3
	rec := &recorder{}
	g := &gated{}
	g.down.Store(true)
	g.r = newTestResilient(g, p, rec)
	const calls = 20
	done := make(chan error, calls)
	for range calls {
		go func() { _, err := g.r.Complete(context.Background(), Request{}); done <- err }()
	}
	time.Sleep(time.Second)
	during := len(g.requests())
	g.down.Store(false)
	back := time.Now()
	for range calls {
		if err := <-done; err != nil {
			t.Fatalf("a call failed during an outage shorter than its deadline: %v", err)
		}
	}
	took := time.Since(back)
	// Up to the 20 first requests (sent together, before the breaker
	// opened), then at most 3 probes per open period of 100 ms.
	if bound := calls + int(p.BreakerProbes)*(int(time.Second/p.BreakerOpenFor)+1); during > bound {
		t.Errorf("%d requests in a second of outage, want at most %d", during, bound)
	}
	if took > 2*p.BreakerOpenFor+400*time.Millisecond {
		t.Errorf("the waiting calls were answered %v after the model came back, want within about two open periods", took)
	}
	if g.maxHalf > int(p.BreakerProbes) {
		t.Errorf("%d requests in flight while half-open, want at most %d probes", g.maxHalf, p.BreakerProbes)
	}
	if _, states := rec.got(); !strings.Contains(states, "open half-open open") || !strings.HasSuffix(states, "half-open closed") {
		t.Errorf("breaker states %q: want probes failing while down, then closing", states)
	}
}

// With the breaker closed and no budget, retries come at the budget's
// floor, not at the backoff's pace: the request rate toward a failing
// provider stays bounded whatever the number of waiting calls.
func TestResilientRetryBudgetBoundsRetries(t *testing.T) {
	p := policy()
	p.RetryBudget = 0
	m := &scripted{errs: make([]error, 10000)}
	for i := range m.errs {
		m.errs[i] = transient
	}
	r := newTestResilient(m, p, &recorder{})
	ctx := WithWait(context.Background(), Wait{Until: time.Now().Add(1500 * time.Millisecond)})
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := r.Complete(ctx, Request{}); !errors.Is(err, ErrExhausted) {
				t.Errorf("err %v, want exhausted at the deadline", err)
			}
		})
	}
	wg.Wait()
	// 5 first requests, the burst of 10, one a second for 1.5 s.
	if n := m.called(); n > 5+budgetBurst+2 {
		t.Fatalf("%d requests in 1.5 s, want at most %d", n, 5+budgetBurst+2)
	}
}

func TestResilientBreakerIgnoresRefusalsAndUnsentRequests(t *testing.T) {
	p := policy()
	p.BreakerFailures = 2
	m := &scripted{}
	for range 4 {
		m.errs = append(m.errs, fmt.Errorf("%w: 400", ErrPermanent))
	}
	r := newTestResilient(m, p, &recorder{})
	for range 4 {
		_, _ = r.Complete(context.Background(), Request{})
	}
	quotaDown := errors.New("quota store unreachable")
	var acquired, released int
	ctx := WithWait(context.Background(), Wait{Acquire: func(context.Context) (func(), error) {
		if acquired++; acquired <= 3 {
			return nil, quotaDown
		}
		return func() { released++ }, nil
	}})
	for range 3 {
		if _, err := r.Complete(ctx, Request{}); !errors.Is(err, quotaDown) {
			t.Fatalf("err %v, want the quota's error at once", err)
		}
	}
	if r.BreakerState() != "closed" || m.called() != 4 {
		t.Fatalf("breaker %s after %d requests: client errors and unsent requests opened it", r.BreakerState(), m.called())
	}
	if _, err := r.Complete(ctx, Request{}); err != nil || released != 1 {
		t.Fatalf("err %v, %d releases; want the slot released after the request", err, released)
	}
}

// A limited call (a Router's fallback target) does not wait for an open
// breaker.
func TestResilientLimitedCallDoesNotWaitForTheBreaker(t *testing.T) {
	p := policy()
	p.MaxAttempts, p.BreakerFailures, p.BreakerOpenFor = 1, 1, time.Minute
	r := newTestResilient(&scripted{errs: []error{transient}}, p, &recorder{})
	if _, err := r.Complete(context.Background(), Request{}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("err %v", err)
	}
	start := time.Now()
	if _, err := r.Complete(context.Background(), Request{}); !errors.Is(err, ErrUnavailable) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("open breaker: %v after %v, want unavailable at once", err, time.Since(start))
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"": 0, "2": 2 * time.Second, "0.5": 500 * time.Millisecond, "soon": 0,
		now.Add(4 * time.Second).Format(http.TimeFormat): 4 * time.Second,
	}
	for in, want := range tests {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("%q: %v want %v", in, got, want)
		}
	}
}
