package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/telemetry"
)

// Correlation puts the record's correlation id into the context (so every log
// line carries it) and onto the current span.
func Correlation() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			if id := Header(r, HeaderCorrelationID); id != "" {
				ctx = telemetry.WithCorrelationID(ctx, id)
				telemetry.SetCorrelation(ctx, id)
			}
			return next(ctx, r)
		}
	}
}
