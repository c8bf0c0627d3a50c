package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/telemetry"
)

// Correlation puts the record's correlation id into the context, so every log
// line and every span started below carries it. (The process span, started
// above, takes it from the header itself, at its start.)
func Correlation() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			if id := Header(r, HeaderCorrelationID); id != "" {
				ctx = telemetry.WithCorrelationID(ctx, id)
			}
			return next(ctx, r)
		}
	}
}
