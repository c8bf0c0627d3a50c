// Command ai-consumer answers the messages on incoming_messages with the
// chat model and produces the answers to responses.
package main

import (
	"context"

	"github.com/chatrelay/chat/internal/process"
)

func main() { process.Main(process.AIConsumer, run) }

func run(ctx context.Context) error { return process.Start(ctx, process.AIConsumer) }
