package kafka

import (
	"context"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/chatrelay/chat/internal/telemetry"
)

// failingProducer fails the benchmark: a record handled without error must
// never reach the dead-letter topic.
type failingProducer struct{ b *testing.B }

func (p failingProducer) ProduceSync(context.Context, ...*kgo.Record) kgo.ProduceResults {
	p.b.Fatal("a successful record was dead-lettered")
	return nil
}

// benchRecord is a responses record as the consumer hands it to the
// handler: the contract headers and the producer's trace context on the
// wire (written by the produce hook), no context of its own.
func benchRecord(b *testing.B, tp trace.TracerProvider) (*kgo.Record, trace.Span) {
	b.Helper()
	e := benchResponse()
	r, err := EnvelopeRecord(TopicResponses, e)
	if err != nil {
		b.Fatal(err)
	}
	r.Partition, r.Offset = 3, 123456
	ctx, span := tp.Tracer("producer").Start(context.Background(), "process incoming_messages", trace.WithSpanKind(trace.SpanKindConsumer))
	r.Context = telemetry.WithCorrelationID(ctx, e.CorrelationID)
	traceHeaders{}.OnProduceRecordBuffered(r)
	r.Context = nil
	return r, span
}

// BenchmarkHandlerChain measures what the standard middleware chain (Wrap,
// built as NewWorker builds it) adds to every record, around a handler that
// does nothing. "bare" is that handler alone.
func BenchmarkHandlerChain(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	b.Setenv("OTEL_TRACES_SAMPLER", "")
	sdk, err := telemetry.NewTracerProvider(context.Background(), "bench", "dev")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	prev := otel.GetTracerProvider()
	b.Cleanup(func() { otel.SetTracerProvider(prev) })

	calls := 0
	trivial := func(context.Context, *kgo.Record) error { calls++; return nil }
	chain := func(b *testing.B) Handler {
		reg := prometheus.NewRegistry()
		dlq := NewDLQCounter(reg)
		dlq.WithLabelValues(TopicResponses)
		return Wrap(trivial, ChainDeps{
			Group: "message-relay", Log: slog.New(slog.DiscardHandler),
			Metrics: NewHandlerMetrics(reg).Init(TopicResponses),
			DLQ:     failingProducer{b}, DLQCounter: dlq,
		})
	}
	run := func(b *testing.B, tp trace.TracerProvider, h func(b *testing.B) Handler) {
		otel.SetTracerProvider(tp)
		handle := h(b)
		r, span := benchRecord(b, tp)
		defer span.End()
		ctx, cancel := context.WithCancel(context.Background()) // the consumer's processing context
		defer cancel()
		calls = 0
		b.ReportAllocs()
		for b.Loop() {
			if err := handle(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		if calls != b.N {
			b.Fatalf("handler ran %d times for %d records", calls, b.N)
		}
	}
	b.Run("bare", func(b *testing.B) {
		run(b, noop.NewTracerProvider(), func(*testing.B) Handler { return trivial })
	})
	b.Run("wrap_noop_tracer", func(b *testing.B) { run(b, noop.NewTracerProvider(), chain) })
	b.Run("wrap_sdk_tracer", func(b *testing.B) { run(b, sdk, chain) })

	// Each layer alone (SDK tracer), to see where the chain's cost is.
	reg := prometheus.NewRegistry()
	layers := []struct {
		name string
		mw   func(b *testing.B) Middleware
	}{
		{"recover", func(*testing.B) Middleware { return Recover() }},
		{"tracing", func(*testing.B) Middleware { return Tracing("message-relay") }},
		{"correlation", func(*testing.B) Middleware { return Correlation() }},
		{"metrics", func(*testing.B) Middleware { return Metrics(NewHandlerMetrics(reg).Init(TopicResponses)) }},
		{"retry", func(*testing.B) Middleware { return Retry(RetryPolicy{}, slog.New(slog.DiscardHandler)) }},
		{"dlq", func(b *testing.B) Middleware { return DLQ(failingProducer{b}, nil, nil) }},
	}
	for _, l := range layers {
		b.Run("only_"+l.name, func(b *testing.B) {
			reg = prometheus.NewRegistry()
			run(b, sdk, func(b *testing.B) Handler { return l.mw(b)(trivial) })
		})
	}
}
