package kafka

import (
	"context"
	"strconv"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

const instrumentation = "github.com/chatrelay/chat/internal/kafka"

// consumerSpan is built once: trace.WithSpanKind allocates a closure.
var consumerSpan = trace.WithSpanKind(trace.SpanKindConsumer)

type spanName struct{ topic, name string }

// Tracing starts a consumer "process <topic>" span for each record, a child of
// the receive span kotel made from the record's traceparent header, so the
// work joins the producer's trace.
func Tracing(group string) Middleware {
	tracer := otel.Tracer(instrumentation)
	// The span name is the same for every record of a topic: remember the
	// last one rather than concatenate it per record.
	var lastName atomic.Pointer[spanName]
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			if r.Context != nil {
				ctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(r.Context))
			}
			name := lastName.Load()
			if name == nil || name.topic != r.Topic {
				name = &spanName{topic: r.Topic, name: "process " + r.Topic}
				lastName.Store(name)
			}
			ctx, span := tracer.Start(ctx, name.name,
				consumerSpan,
				trace.WithAttributes(
					semconv.MessagingSystemKafka,
					semconv.MessagingOperationTypeProcess,
					semconv.MessagingOperationName("process"),
					semconv.MessagingDestinationName(r.Topic),
					semconv.MessagingConsumerGroupName(group),
					semconv.MessagingDestinationPartitionID(strconv.Itoa(int(r.Partition))),
					semconv.MessagingKafkaOffset(int(r.Offset)),
					semconv.MessagingKafkaMessageKey(string(r.Key)),
					attribute.String("messaging.message.id", Header(r, HeaderMessageID)),
				))
			defer span.End()
			err := next(ctx, r)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		}
	}
}
