// Package process runs a service binary: the `healthcheck` subcommand,
// signal handling, the one place where logs, traces and metrics are set up,
// and the hard deadline on shutdown.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/telemetry"
)

// Telemetry is what every part of a process logs, traces and counts with.
type Telemetry struct {
	Service  string
	Log      *slog.Logger
	Registry *prometheus.Registry
	Tracer   *sdktrace.TracerProvider
}

// NewTelemetry sets up the process's telemetry: JSON logs at LOG_LEVEL,
// the OTEL_*-configured tracer provider (installed globally) and the metric
// registry.
func NewTelemetry(ctx context.Context, service, logLevel string) (*Telemetry, error) {
	level, err := telemetry.ParseLevel(logLevel)
	if err != nil {
		return nil, err
	}
	log := telemetry.NewLogger(os.Stdout, service, level)
	slog.SetDefault(log)
	tp, err := telemetry.NewTracerProvider(ctx, service, telemetry.BuildVersion())
	if err != nil {
		return nil, err
	}
	telemetry.InstallGlobal(tp)
	return &Telemetry{Service: service, Log: log, Registry: telemetry.NewRegistry(), Tracer: tp}, nil
}

// Shutdown flushes spans; it is the last step of a shutdown.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if err := t.Tracer.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracer shutdown: %w", err)
	}
	return nil
}

// Main runs a service: `<binary> healthcheck` probes the ops listener;
// otherwise run gets a context cancelled on SIGINT/SIGTERM. An error is
// printed once, as JSON, and the process exits 1.
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

// Part is a long-running piece of a service.
type Part interface {
	Run(ctx context.Context) error
}

// Run runs the parts until ctx ends or one fails, then waits for them to
// shut down (each drains its own work in order) for at most timeout. The ops
// listener outlives the parts so probes and scrapes see the drain; telemetry
// is flushed last.
func Run(ctx context.Context, tel *Telemetry, opsSrv *ops.Server, timeout time.Duration, parts ...Part) error {
	if err := opsSrv.Listen(); err != nil {
		return err
	}
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan error, 1)
	go func() { opsDone <- opsSrv.Run(opsCtx) }()
	tel.Log.Info("ops listener up", "addr", opsSrv.BoundAddr())

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
	remaining := len(parts)
	collect := func(err error) {
		remaining--
		if err != nil && !errors.Is(err, context.Canceled) {
			tel.Log.Error("part stopped with an error", "error", err)
			result = errors.Join(result, err)
		}
	}
	for remaining > 0 {
		select {
		case err := <-errs:
			collect(err)
		case <-partsCtx.Done():
			tel.Log.Info("shutting down", "timeout", timeout.String())
			deadline := time.After(timeout)
			for remaining > 0 {
				select {
				case err := <-errs:
					collect(err)
				case <-deadline:
					result = errors.Join(result, fmt.Errorf("shutdown did not finish within %s", timeout))
					remaining = 0
				}
			}
		}
	}
	stopOps()
	<-opsDone
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(sctx); err != nil {
		result = errors.Join(result, err)
	}
	tel.Log.Info("stopped")
	return result
}

// Service is a part with readiness checks.
type Service interface {
	Part
	Checks() map[string]ops.Check
}

// Builder makes a service from its configuration.
type Builder[C any] func(ctx context.Context, cfg *C, log *slog.Logger, reg prometheus.Registerer) (Service, error)

// Start is the whole of a standalone service's run(): load the ops settings
// and the service's config C from the environment (failing fast, naming the
// variable), set up telemetry, log the config with secrets masked, build the
// service, and run it beside the ops listener until ctx ends.
func Start[C any](ctx context.Context, service string, build Builder[C]) error {
	var opsCfg config.Ops
	if err := config.Load(&opsCfg); err != nil {
		return err
	}
	var cfg C
	if err := config.Load(&cfg); err != nil {
		return err
	}
	tel, err := NewTelemetry(ctx, service, opsCfg.LogLevel)
	if err != nil {
		return err
	}
	tel.Log.Info("starting", config.LogValue(&cfg)...)
	s, err := build(ctx, &cfg, tel.Log, telemetry.ServiceRegisterer(tel.Registry, service))
	if err != nil {
		return err
	}
	opsSrv := &ops.Server{Addr: opsCfg.Addr, Gatherer: tel.Registry, Log: tel.Log}
	for name, c := range s.Checks() {
		opsSrv.AddCheck(name, c)
	}
	return Run(ctx, tel, opsSrv, opsCfg.ShutdownTimeout, s)
}
