package process

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/chatrelay/chat/internal/telemetry"
)

// Telemetry is what every part of a process logs, traces and counts with.
type Telemetry struct {
	// Service names the process in its own log lines.
	Service string
	// Log is the process's own logger (start-up, shutdown).
	Log *slog.Logger
	// Out and Level are where and from which level each service's own
	// logger writes (Logger); nil Out means stdout.
	Out   io.Writer
	Level slog.Leveler
	// Registry is served on /metrics; each service registers into it under
	// its own "service" label.
	Registry *prometheus.Registry
	// Tracer is flushed last on shutdown; nil when the caller owns tracing
	// (tests).
	Tracer *sdktrace.TracerProvider
}

// NewTelemetry sets up a process's telemetry: JSON logs on stdout at
// LOG_LEVEL (also slog's default), the OTEL_*-configured tracer provider
// (installed globally) and a metric registry with the runtime collectors.
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
	return &Telemetry{Service: service, Log: log, Out: os.Stdout, Level: level, Registry: telemetry.NewRegistry(), Tracer: tp}, nil
}

// Logger is the logger of one service in the process: its lines carry the
// service's name, so the dev stack's interleaved output stays readable.
func (t *Telemetry) Logger(service string) *slog.Logger {
	out := t.Out
	if out == nil {
		out = os.Stdout
	}
	return telemetry.NewLogger(out, service, t.Level)
}

// Shutdown flushes spans; it is the last step of a shutdown.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t.Tracer == nil {
		return nil
	}
	if err := t.Tracer.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracer shutdown: %w", err)
	}
	return nil
}
