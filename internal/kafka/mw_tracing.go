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

	"github.com/chatrelay/chat/internal/telemetry"
)

const instrumentation = "github.com/chatrelay/chat/internal/kafka"

// consumerSpan is built once: trace.WithSpanKind allocates a closure.
var consumerSpan = trace.WithSpanKind(trace.SpanKindConsumer)

type spanName struct{ topic, name string }

// Tracing starts a consumer "process <topic>" span for each record, a child of
// the producer's span in the record's traceparent header, so the work joins
// the message's trace. It is the record's one span on this hop (tracectx.go).
func Tracing(group string) Middleware {
	tracer := otel.Tracer(instrumentation)
	// The span name is the same for every record of a topic: remember the
	// last one rather than concatenate it per record.
	var lastName atomic.Pointer[spanName]
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			ctx = RecordContext(ctx, r)
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
					// Here rather than added after the start: the SDK sizes a
					// span's attributes to those it starts with, so each one
					// set later copies them all.
					telemetry.CorrelationAttr.String(Header(r, HeaderCorrelationID)),
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
