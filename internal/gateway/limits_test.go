package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// fakeMessageLimits answers every check with v and err.
type fakeMessageLimits struct {
	v   ratelimit.Verdict
	err error
}

func (f fakeMessageLimits) Check(context.Context, string) (ratelimit.Verdict, error) {
	return f.v, f.err
}

// Each verdict becomes its refusal and counter; a failed check lets the
// message through and counts an error for every limit it left undecided.
func TestOverLimit(t *testing.T) {
	both := []string{ratelimit.LimitUserMessages, ratelimit.LimitUserTokens}
	for _, tc := range []struct {
		name        string
		limits      fakeMessageLimits
		refusal     *protocol.Refusal
		args        []any
		limited     string
		errorsCount []string
	}{
		{"admitted", fakeMessageLimits{}, nil, nil, "", nil},
		{"rate", fakeMessageLimits{v: ratelimit.Verdict{Refused: ratelimit.LimitUserMessages, RetryAfter: 1500 * time.Millisecond}},
			&protocol.FrameRateLimited, []any{"2"}, ratelimit.LimitUserMessages, nil},
		{"budget", fakeMessageLimits{v: ratelimit.Verdict{Refused: ratelimit.LimitUserTokens}},
			&protocol.FrameTokenBudget, nil, ratelimit.LimitUserTokens, nil},
		{"redis down", fakeMessageLimits{v: ratelimit.Verdict{Unchecked: both}, err: errors.New("down")}, nil, nil, "", both},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Gateway{lim: limits{Messages: tc.limits}, m: newMetrics(prometheus.NewRegistry(), func() float64 { return 0 }, 0)}
			r, args := g.overLimit(context.Background(), "u1")
			if r != tc.refusal || len(args) != len(tc.args) || (len(args) == 1 && args[0] != tc.args[0]) {
				t.Fatalf("refusal %v %v, want %v %v", r, args, tc.refusal, tc.args)
			}
			for _, l := range ratelimit.Names() {
				if got, want := testutil.ToFloat64(g.m.limited.WithLabelValues(l)), b2f(l == tc.limited); got != want {
					t.Errorf("limited{limit=%s} = %v, want %v", l, got, want)
				}
				wantErr := 0.0
				for _, e := range tc.errorsCount {
					wantErr += b2f(e == l)
				}
				if got := testutil.ToFloat64(g.m.limitErrors.WithLabelValues(l)); got != wantErr {
					t.Errorf("ratelimit errors{limit=%s} = %v, want %v", l, got, wantErr)
				}
			}
		})
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
