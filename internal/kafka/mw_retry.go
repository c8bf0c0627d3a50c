package kafka

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

type attemptKey struct{}

// Attempt returns the 1-based attempt number of the current handling.
func Attempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptKey{}).(int); ok {
		return n
	}
	return 1
}

// RetryPolicy shapes the backoff between attempts.
type RetryPolicy struct {
	Initial time.Duration
	Max     time.Duration
}

// Retry re-runs the handler on transient errors with exponential backoff and
// jitter, for as long as ctx lives: an outage of Redis or the broker must
// delay work, not lose it. Permanent errors are returned at once.
func Retry(p RetryPolicy, log *slog.Logger) Middleware {
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			// The backoff is made at the first failure: most records succeed
			// at once and never need it.
			var b *backoff.ExponentialBackOff
			for attempt := 1; ; attempt++ {
				err := next(context.WithValue(ctx, attemptKey{}, attempt), r)
				if err == nil || IsPermanent(err) || ctx.Err() != nil {
					return err
				}
				if b == nil {
					b = backoff.NewExponentialBackOff()
					b.InitialInterval = p.Initial
					b.MaxInterval = p.Max
				}
				wait := b.NextBackOff()
				if log != nil {
					log.WarnContext(ctx, "record failed; retrying", "topic", r.Topic, "partition", r.Partition,
						"offset", r.Offset, "attempt", attempt, "retry_in", wait.String(), "error", err)
				}
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
	}
}
