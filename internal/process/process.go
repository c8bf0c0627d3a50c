// Package process is the one wiring path of the chat services. Build reads
// each service's configuration from an environment, sets up logs, traces and
// metrics, and builds websocket-server, ai-consumer and message-relay with
// their public constructors; Services.Run puts their readiness checks on the
// ops listener and runs them with an ordered, bounded shutdown. The
// standalone binaries (Main and Start), the dev stack and the end-to-end
// tests all go through Build, so a new dependency of a service is wired in
// one place and no code path exists only in dev or only in tests.
package process

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chatrelay/chat/internal/ops"
)

// Main runs a service binary: `<binary> healthcheck` probes the ops
// listener; otherwise run gets a context cancelled on SIGINT/SIGTERM. An
// error is printed once, as JSON, and the process exits 1.
//
// The signal does not say whether the process comes back (Kubernetes and
// compose send SIGTERM for a rollout and a scale-down alike), and it need
// not: its consumers leave their groups on every orderly stop, which hands
// their partitions over at once and measured as fast as staying for a
// restart (docs/takeover.md). Only a crash keeps a member in its group,
// for the restart to take back with the same INSTANCE_ID.
func Main(service string, run func(ctx context.Context) error) {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		ops.HealthcheckMain()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("service failed", "service", service, "error", err)
		os.Exit(1)
	}
}

// Start is the whole of a standalone service's run(): the one service from
// the process environment, through the same Build as everything else.
func Start(ctx context.Context, service string) error {
	applyGCDefault(service, os.Getenv)
	s, err := Build(ctx, Options{Services: []string{service}})
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
