// Command websocket-server is the chat gateway: WebSocket clients in, Kafka
// incoming_messages out, answers from Redis back to the sockets.
package main

import (
	"context"

	"github.com/chatrelay/chat/internal/process"
)

func main() { process.Main(process.Gateway, run) }

func run(ctx context.Context) error { return process.Start(ctx, process.Gateway) }
