// Package telemetry sets up a process's logs, traces and metrics in one place:
// a JSON slog logger whose lines carry the correlation and trace ids of the
// context they are written with, an OpenTelemetry tracer provider configured
// by the standard OTEL_* variables, and a Prometheus registry.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

type ctxKey int

const correlationKey ctxKey = iota

// BaggageKey is the W3C baggage member that carries the correlation id
// across process boundaries (Kafka headers), so spans that libraries start
// from an extracted context (kotel's receive spans) get it too.
const BaggageKey = "correlation_id"

// WithCorrelationID returns a context whose log lines and spans carry id,
// and whose outgoing propagation carries it as baggage.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	ctx = context.WithValue(ctx, correlationKey, id)
	if m, err := baggage.NewMemberRaw(BaggageKey, id); err == nil {
		if b, err := baggage.FromContext(ctx).SetMember(m); err == nil {
			ctx = baggage.ContextWithBaggage(ctx, b)
		}
	}
	return ctx
}

// CorrelationID returns the correlation id carried by ctx (set here or
// received as baggage), if any.
func CorrelationID(ctx context.Context) string {
	if id, ok := ctx.Value(correlationKey).(string); ok {
		return id
	}
	return baggage.FromContext(ctx).Member(BaggageKey).Value()
}

// ParseLevel reads LOG_LEVEL values: debug, info, warn, error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", s)
	}
	return l, nil
}

// NewLogger returns a JSON logger writing to w whose every line carries
// service, and, when the context has them, correlation_id, trace_id and
// span_id — so callers log with slog's *Context methods and never repeat ids.
func NewLogger(w io.Writer, service string, level slog.Leveler) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(contextHandler{h}).With("service", service)
}

type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if id := CorrelationID(ctx); id != "" {
			r.AddAttrs(slog.String("correlation_id", id))
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(as)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}
