// Command devstack runs the whole chat system in one process (make run):
// websocket-server, ai-consumer and message-relay on an embedded broker and
// Redis, with the offline model unless OPENAI_API_KEY is set.
package main

import (
	"context"
	"os"

	"github.com/chatrelay/chat/internal/devstack"
	"github.com/chatrelay/chat/internal/process"
)

func main() {
	process.Main("devstack", func(ctx context.Context) error { return devstack.Run(ctx, os.Stderr) })
}
