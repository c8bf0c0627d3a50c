package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chatrelay/chat/internal/ops"
)

// Part is a long-running piece of a process.
type Part interface {
	Run(ctx context.Context) error
}

// Service is a part with readiness checks.
type Service interface {
	Part
	Checks() map[string]ops.Check
}

// Run runs the parts until ctx ends or one fails, then waits for them to
// shut down (each drains its own work in order) for at most timeout. The ops
// listener outlives the parts so probes and scrapes see the drain; telemetry
// is flushed last.
func Run(ctx context.Context, tel *Telemetry, opsSrv *ops.Server, timeout time.Duration, parts ...Part) error {
	if err := opsSrv.Listen(); err != nil {
		return err
	}
	// Not cancelled with ctx: the listener stops only after the parts.
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan error, 1)
	go func() { opsDone <- opsSrv.Run(opsCtx) }()
	tel.Log.Info("ops listener up", "addr", opsSrv.BoundAddr())

	result := runParts(ctx, tel.Log, timeout, parts)
	stopOps()
	if err := <-opsDone; err != nil {
		result = errors.Join(result, err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(sctx); err != nil {
		result = errors.Join(result, err)
	}
	tel.Log.Info("stopped")
	return result
}

// runParts runs every part until ctx ends or one fails, which stops the
// others, and then waits for all of them for at most timeout. A part still
// running after that is abandoned: the process is about to exit, and an
// orchestrator would kill it anyway.
func runParts(ctx context.Context, log *slog.Logger, timeout time.Duration, parts []Part) error {
	partsCtx, cancelParts := context.WithCancel(ctx)
	defer cancelParts()
	errs := make(chan error, len(parts))
	for _, p := range parts {
		go func() {
			err := p.Run(partsCtx)
			if err != nil {
				cancelParts() // one part failing stops the others
			}
			errs <- err
		}()
	}
	var result error
	stopping := partsCtx.Done()
	var deadline <-chan time.Time // armed once the shutdown begins
	for remaining := len(parts); remaining > 0; {
		select {
		case err := <-errs:
			remaining--
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("part stopped with an error", "error", err)
				result = errors.Join(result, err)
			}
		case <-stopping:
			log.Info("shutting down", "timeout", timeout.String())
			stopping, deadline = nil, time.After(timeout)
		case <-deadline:
			return errors.Join(result, fmt.Errorf("shutdown did not finish within %s", timeout))
		}
	}
	return result
}
