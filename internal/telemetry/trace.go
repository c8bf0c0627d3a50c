package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// CorrelationAttr is the span attribute holding the correlation id; Tempo
// searches it as span.correlation_id.
const CorrelationAttr = attribute.Key("correlation_id")

// Propagator is the W3C trace-context propagator used on every hop.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// NewTracerProvider builds the process's tracer provider from the standard
// OTEL_* variables. Without OTEL_EXPORTER_OTLP_ENDPOINT (or the traces-only
// variant) nothing is exported, but spans still get ids, so log lines stay
// correlated. The sampler follows OTEL_TRACES_SAMPLER(_ARG), as the SDK reads
// them itself.
func NewTracerProvider(ctx context.Context, service, version string) (*sdktrace.TracerProvider, error) {
	if os.Getenv("OTEL_SERVICE_NAME") != "" {
		service = os.Getenv("OTEL_SERVICE_NAME")
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSpanProcessor(correlationProcessor{})}
	if exporterConfigured() {
		exp, err := newExporter(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func exporterConfigured() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

func newExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch strings.TrimSpace(proto) {
	case "", "http/protobuf":
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: otlp http exporter: %w", err)
		}
		return exp, nil
	case "grpc":
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: otlp grpc exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not grpc or http/protobuf", proto)
	}
}

// InstallGlobal makes tp and the W3C propagator the process defaults, so that
// libraries instrumented with the global provider (redisotel, kotel) join in.
func InstallGlobal(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator)
}

// SetCorrelation records the correlation id on the span in ctx.
func SetCorrelation(ctx context.Context, id string) {
	if id != "" {
		trace.SpanFromContext(ctx).SetAttributes(CorrelationAttr.String(id))
	}
}

// OwnScopePrefix begins the instrumentation scope (tracer name) of every
// span this project starts itself.
const OwnScopePrefix = "github.com/chatrelay/chat/"

// CorrelationStart is a span start option with attrs and the correlation id
// of ctx, if it has one. The project's own spans start with the id (see
// correlationProcessor); one that starts with no other attribute is cheaper
// given it by SetCorrelation once started.
func CorrelationStart(ctx context.Context, attrs ...attribute.KeyValue) trace.SpanStartOption {
	if id := CorrelationID(ctx); id != "" {
		attrs = append(attrs, CorrelationAttr.String(id))
	}
	return trace.WithAttributes(attrs...)
}

// correlationProcessor stamps the spans that instrumentation libraries
// (redisotel) start in a context that carries a correlation id, so a trace
// can be found by correlation id. The project's own spans (OwnScopePrefix)
// start with it instead: the SDK sizes a span's attributes to those it
// starts with, so one set here copies them all, and one set twice costs a
// de-duplication map when the span ends (BenchmarkOwnSpan). A new span of
// ours that forgets it fails TestOneTracePerMessage (internal/e2e), which
// looks for the id on every span of a message's trace.
type correlationProcessor struct{}

func (correlationProcessor) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) {
	if strings.HasPrefix(s.InstrumentationScope().Name, OwnScopePrefix) {
		return
	}
	if id := CorrelationID(parent); id != "" {
		s.SetAttributes(CorrelationAttr.String(id))
	}
}
func (correlationProcessor) OnEnd(sdktrace.ReadOnlySpan)      {}
func (correlationProcessor) Shutdown(context.Context) error   { return nil }
func (correlationProcessor) ForceFlush(context.Context) error { return nil }
