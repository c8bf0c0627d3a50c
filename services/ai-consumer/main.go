// Command ai-consumer answers the messages on incoming_messages with the
// chat model and produces the answers to responses.
package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/process"
)

func main() { process.Main("ai-consumer", run) }

func run(ctx context.Context) error {
	return process.Start(ctx, "ai-consumer", func(ctx context.Context, cfg *aiconsumer.Config, log *slog.Logger, reg prometheus.Registerer) (process.Service, error) {
		return aiconsumer.New(ctx, *cfg, aiconsumer.NewModel(*cfg), log, reg)
	})
}
