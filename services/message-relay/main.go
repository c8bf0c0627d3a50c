// Command message-relay publishes the answers on the responses topic to each
// user's Redis channel.
package main

import (
	"context"

	"github.com/chatrelay/chat/internal/process"
)

func main() { process.Main(process.Relay, run) }

func run(ctx context.Context) error { return process.Start(ctx, process.Relay) }
