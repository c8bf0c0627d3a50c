// Package telemetry sets up a process's logs, traces and metrics in one place:
// a slog logger (JSON, or text on a terminal) whose lines carry the correlation and trace ids of the
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

// BaggageKey is the W3C baggage member that carried the correlation id
// across Kafka before the record header alone did; a record from an older
// producer still has it, so CorrelationID reads it when the context has no
// id of its own.
const BaggageKey = "correlation_id"

// WithCorrelationID returns a context whose log lines and spans carry id.
// It does not travel as baggage: the correlation id crosses Kafka in the
// correlation_id header and Redis in the envelope, and each hop puts it back
// with this (a baggage member cost an allocation per message and hop, and a
// header nobody read).
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey, id)
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

// NewLogger returns a logger writing to w whose every line carries
// service, and, when the context has them, correlation_id, trace_id and
// span_id — so callers log with slog's *Context methods and never repeat ids.
//
// Lines are JSON, which is what log collectors parse, except when w is a
// terminal (make run in a shell): a person reads those, so they are slog's
// key=value text with a short time. Loggers for a library (With(
// LibraryKey, name), as the Kafka clients' is) write warnings and errors
// only, unless level is debug: at info, franz-go's group and connection
// chatter buried everything else.
func NewLogger(w io.Writer, service string, level slog.Leveler) *slog.Logger {
	return newLogger(w, service, level, isTerminal(w))
}

func newLogger(w io.Writer, service string, level slog.Leveler, text bool) *slog.Logger {
	if level == nil {
		level = slog.LevelInfo // as slog's own handlers default
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if text {
		opts.ReplaceAttr = shortTime
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(contextHandler{Handler: h, level: level}).With("service", service)
}

// shortTime prints the time of day only: a terminal session is read as it
// happens.
func shortTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
		return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
	}
	return a
}

// LibraryKey is the attribute naming the library a logger is handed to;
// libraries lists the values whose chatter is kept at LibraryLevel.
const LibraryKey = "component"

// LibraryLevel is the least level a library's logger writes unless the
// process logs at debug.
const LibraryLevel = slog.LevelWarn

var libraries = map[string]bool{"franz-go": true}

type contextHandler struct {
	slog.Handler
	level   slog.Leveler // the process's level
	library bool         // a library's logger: kept at LibraryLevel
}

// Enabled is what slog and the library adapters (kslog) ask before a line
// is formatted, so chatter below the floor costs nothing.
func (h contextHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if h.library && l < LibraryLevel && h.level.Level() > slog.LevelDebug {
		return false
	}
	return h.Handler.Enabled(ctx, l)
}

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
	library := h.library
	for _, a := range as {
		if a.Key == LibraryKey && libraries[a.Value.String()] {
			library = true
		}
	}
	return contextHandler{Handler: h.Handler.WithAttrs(as), level: h.level, library: library}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{Handler: h.Handler.WithGroup(name), level: h.level, library: h.library}
}
