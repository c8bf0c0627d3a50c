// Command websocket-server is the chat gateway: WebSocket clients in, Kafka
// incoming_messages out, answers from Redis back to the sockets.
package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/gateway"
	"github.com/chatrelay/chat/internal/process"
)

func main() { process.Main("websocket-server", run) }

func run(ctx context.Context) error {
	return process.Start(ctx, "websocket-server", func(ctx context.Context, cfg *gateway.Config, log *slog.Logger, reg prometheus.Registerer) (process.Service, error) {
		return gateway.New(ctx, *cfg, log, reg)
	})
}
