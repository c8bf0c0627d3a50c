package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel"
)

// The trace context crosses Kafka in the record headers (traceparent,
// tracestate, baggage), written from the producing code's span and read
// back by the consumer's process span, so one message is one trace.
//
// This replaces kotel's tracer, which wrapped every record in two spans of
// its own — a "publish" span from buffering to the broker's ack and a
// "receive" span from fetch to poll — a third of the tracing cost of each
// hop (docs/performance.md). The hops' own spans already cover that time:
// the gateway's chat.receive ends at the produce's ack, the ai-consumer's
// process span at its answer's, and the client's produce latency is the
// kprom and chat_*_produce metrics.

// traceHeaders injects the trace context of a produced record's Context into
// its headers as the record is buffered, so every producing path (answers,
// chunks, dead letters, the gateway's messages) carries it without a call
// of its own.
type traceHeaders struct{}

var _ kgo.HookProduceRecordBuffered = traceHeaders{}

func (traceHeaders) OnProduceRecordBuffered(r *kgo.Record) {
	if r.Context != nil {
		otel.GetTextMapPropagator().Inject(r.Context, kotel.NewRecordCarrier(r))
	}
}

// RecordContext returns ctx with the remote trace context (and baggage)
// carried in r's headers, for the spans and log lines about r.
func RecordContext(ctx context.Context, r *kgo.Record) context.Context {
	return otel.GetTextMapPropagator().Extract(ctx, kotel.NewRecordCarrier(r))
}
