// Command loadgen drives the chat system as real clients do: N users over
// WebSocket at an open-model message rate, measuring latency, loss and
// duplication, and the servers' memory and goroutines. See
// docs/performance.md ("Load generator") and `loadgen -h`.
package main

import (
	"os"

	"github.com/chatrelay/chat/internal/loadgen"
)

func main() {
	os.Exit(loadgen.Main(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
