package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
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

type recorder struct {
	mu      sync.Mutex
	retries int
	states  []string
	sleeps  []time.Duration
}

func (r *recorder) Retry(string) { r.mu.Lock(); r.retries++; r.mu.Unlock() }
func (r *recorder) BreakerState(s string) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
}

var transient = errors.New("503")

func policy() Policy {
	return Policy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 50 * time.Millisecond, RetryBudget: 1, BreakerFailures: 100, BreakerOpenFor: time.Minute}
}

func newTestResilient(m Model, p Policy, rec *recorder) *Resilient {
	r := NewResilient(m, p, rec)
	r.sleep = func(_ context.Context, d time.Duration) error {
		rec.mu.Lock()
		rec.sleeps = append(rec.sleeps, d)
		rec.mu.Unlock()
		return nil
	}
	return r
}

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
		{name: "attempts run out", errs: []error{transient, transient, transient, transient, transient}, wantErr: ErrExhausted, wantCalls: 4},
		{name: "budget runs out", errs: []error{transient, transient, transient}, policy: func(p *Policy) { p.RetryBudget = 0 }, wantErr: ErrExhausted, wantCalls: 1},
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
			if tc.name == "budget runs out" {
				r.budget = newRetryBudget(0, 0)
			}
			_, err := r.Complete(context.Background(), Request{})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if m.calls != tc.wantCalls || rec.retries != tc.wantCalls-1 {
				t.Fatalf("calls %d retries %d, want %d", m.calls, rec.retries, tc.wantCalls)
			}
			for _, d := range rec.sleeps {
				if d < p.BaseDelay || d > p.MaxDelay {
					t.Fatalf("backoff %v outside [%v, %v]", d, p.BaseDelay, p.MaxDelay)
				}
			}
		})
	}
}

func TestResilientBreaker(t *testing.T) {
	p := policy()
	p.MaxAttempts, p.BreakerFailures, p.BreakerOpenFor = 1, 3, 100*time.Millisecond
	m := &scripted{errs: []error{transient, transient, transient}}
	rec := &recorder{}
	r := newTestResilient(m, p, rec)
	for i := 0; i < 3; i++ {
		if _, err := r.Complete(context.Background(), Request{}); !errors.Is(err, ErrExhausted) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	start := time.Now()
	if _, err := r.Complete(context.Background(), Request{}); !errors.Is(err, ErrUnavailable) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("open breaker: %v after %v", err, time.Since(start))
	}
	if m.calls != 3 || r.BreakerState() != "open" {
		t.Fatalf("calls %d state %s", m.calls, r.BreakerState())
	}
	time.Sleep(150 * time.Millisecond) // half-open: one trial call closes it
	if _, err := r.Complete(context.Background(), Request{}); err != nil || r.BreakerState() != "closed" {
		t.Fatalf("after recovery: %v, %s", err, r.BreakerState())
	}
	if len(rec.states) < 3 {
		t.Fatalf("state changes %v", rec.states)
	}
	// Permanent refusals never open the breaker.
	m.errs = []error{fmt.Errorf("%w: 400", ErrPermanent), fmt.Errorf("%w: 400", ErrPermanent), fmt.Errorf("%w: 400", ErrPermanent), fmt.Errorf("%w: 400", ErrPermanent)}
	for i := 0; i < 4; i++ {
		_, _ = r.Complete(context.Background(), Request{})
	}
	if r.BreakerState() != "closed" {
		t.Fatal("client errors opened the breaker")
	}
}

// Retry-After from the real API (through go-openai) sets the delay.
func TestResilientHonoursRetryAfter(t *testing.T) {
	srv := fakeopenai.Start(t, fakeopenai.WithAPIKey("k"))
	srv.FailNext(1, http.StatusTooManyRequests, "3")
	p := policy()
	p.MaxDelay = 10 * time.Second
	rec := &recorder{}
	r := newTestResilient(NewOpenAI(OpenAIConfig{APIKey: "k", BaseURL: srv.BaseURL(), Model: "m"}), p, rec)
	if _, err := r.Complete(context.Background(), Request{Messages: []Message{{RoleUser, "hi"}}}); err != nil {
		t.Fatal(err)
	}
	if len(rec.sleeps) != 1 || rec.sleeps[0] != 3*time.Second {
		t.Fatalf("slept %v, want [3s]", rec.sleeps)
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
