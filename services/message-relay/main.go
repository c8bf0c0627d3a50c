// Command message-relay publishes the answers on the responses topic to each
// user's Redis channel.
package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/process"
	"github.com/chatrelay/chat/internal/relay"
)

func main() { process.Main("message-relay", run) }

func run(ctx context.Context) error {
	return process.Start(ctx, "message-relay", func(ctx context.Context, cfg *relay.Config, log *slog.Logger, reg prometheus.Registerer) (process.Service, error) {
		return relay.New(ctx, *cfg, log, reg)
	})
}
