package kafka

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler processes one record. Returning nil means the record's output is
// durable and its offset may be committed.
type Handler func(ctx context.Context, r *kgo.Record) error

// Middleware wraps a Handler with one cross-cutting concern.
type Middleware func(Handler) Handler

// Chain wraps h so that mws[0] is the outermost layer.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// ErrPermanent marks an error that retrying cannot fix: the record goes to
// the dead-letter topic.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so that IsPermanent reports true.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (p permanentError) Error() string        { return p.err.Error() }
func (p permanentError) Unwrap() []error      { return []error{p.err, ErrPermanent} }
func (p permanentError) Is(target error) bool { return target == ErrPermanent }

// IsPermanent reports whether err must not be retried.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// ChainDeps are what the standard middleware chain needs.
type ChainDeps struct {
	Group      string
	Log        *slog.Logger
	Metrics    *HandlerMetrics
	Retry      RetryPolicy
	DLQ        Producer
	DLQCounter *prometheus.CounterVec
}

// Wrap is the one place where a consumer's handler gets its cross-cutting
// concerns, outermost first: recover → tracing → correlation → metrics →
// retry → DLQ. The inner Recover turns a handler panic into a permanent
// error the DLQ can take; the outer one guards the middleware itself.
func Wrap(h Handler, d ChainDeps) Handler {
	return Chain(h,
		Recover(),
		Tracing(d.Group),
		Correlation(),
		Metrics(d.Metrics),
		Retry(d.Retry, d.Log),
		DLQ(d.DLQ, d.DLQCounter, d.Log),
		Recover(),
	)
}
