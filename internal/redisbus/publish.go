package redisbus

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/chatrelay/chat/internal/envelope"
)

// Publish sends e on its user's channel, with the current trace context
// written into the envelope so the delivering gateway continues the trace.
// It returns once Redis accepted the command. On a cluster the channel is a
// sharded one (SPUBLISH; see Clustered).
func Publish(ctx context.Context, c redis.UniversalClient, e *envelope.Envelope) error {
	b, err := Payload(ctx, e)
	if err != nil {
		return err
	}
	publish := c.Publish
	if Clustered(c) {
		publish = c.SPublish
	}
	if err := publish(ctx, UserChannel(e.UserID), b).Err(); err != nil {
		return fmt.Errorf("redis publish to %s: %w", e.UserID, err)
	}
	return nil
}

// Payload is what Publish sends for e: the envelope with the current trace
// context written into it.
func Payload(ctx context.Context, e *envelope.Envelope) ([]byte, error) {
	otel.GetTextMapPropagator().Inject(ctx, envelope.Carrier{E: e})
	return envelope.Marshal(e)
}
