package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRetry(t *testing.T) {
	p := RetryPolicy{Initial: time.Millisecond, Max: 2 * time.Millisecond}
	tests := []struct {
		name      string
		failures  int  // transient failures before success
		permanent bool // fail permanently on the first attempt
		wantCalls int
		wantErr   bool
		cancelAt  int // cancel the context during this attempt (0: never)
	}{
		{name: "success first time", wantCalls: 1},
		{name: "transient then success", failures: 3, wantCalls: 4},
		{name: "permanent is not retried", permanent: true, wantCalls: 1, wantErr: true},
		{name: "shutdown stops retrying", failures: 1000, cancelAt: 3, wantCalls: 3, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			h := Retry(p, nil)(func(ctx context.Context, _ *kgo.Record) error {
				calls++
				if Attempt(ctx) != calls {
					t.Fatalf("attempt %d on call %d", Attempt(ctx), calls)
				}
				if calls == tc.cancelAt {
					cancel()
				}
				if tc.permanent {
					return Permanent(errors.New("bad record"))
				}
				if calls <= tc.failures {
					return errors.New("redis down")
				}
				return nil
			})
			err := h(ctx, &kgo.Record{})
			if calls != tc.wantCalls || (err != nil) != tc.wantErr {
				t.Fatalf("calls=%d err=%v", calls, err)
			}
		})
	}
}
