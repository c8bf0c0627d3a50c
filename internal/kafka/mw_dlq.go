package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/telemetry"
)

// Producer is what the DLQ needs to write a record durably.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// NewDLQCounter counts dead-lettered records by source topic.
func NewDLQCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "kafka", Name: "dlq_records_total",
		Help: "Records sent to a dead-letter topic, by source topic.",
	}, []string{"topic"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

const maxReasonLen = 1024

// DLQ sends a record whose handling failed permanently to <topic>.dlq, with
// headers saying why, where from and after how many attempts, and reports
// success so the partition moves on. Only after the dead-letter record is
// acknowledged: a failed DLQ write is returned (and retried), never dropped.
func DLQ(p Producer, counter *prometheus.CounterVec, log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			err := next(ctx, r)
			if err == nil || !IsPermanent(err) {
				return err
			}
			reason := err.Error()
			if len(reason) > maxReasonLen {
				reason = reason[:maxReasonLen]
			}
			dl := &kgo.Record{
				Topic:   r.Topic + DLQSuffix,
				Key:     r.Key,
				Value:   r.Value,
				Headers: append([]kgo.RecordHeader(nil), r.Headers...),
				Context: ctx,
			}
			SetHeader(dl, HeaderDLQReason, reason)
			SetHeader(dl, HeaderDLQTopic, r.Topic)
			SetHeader(dl, HeaderDLQPartition, strconv.Itoa(int(r.Partition)))
			SetHeader(dl, HeaderDLQOffset, strconv.FormatInt(r.Offset, 10))
			SetHeader(dl, HeaderDLQAttempts, strconv.Itoa(Attempt(ctx)))
			SetHeader(dl, HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
			if perr := p.ProduceSync(ctx, dl).FirstErr(); perr != nil {
				return fmt.Errorf("dead-letter %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, perr)
			}
			if counter != nil {
				counter.WithLabelValues(r.Topic).Inc()
			}
			if log != nil {
				log.ErrorContext(ctx, "record dead-lettered", "topic", r.Topic, "partition", r.Partition,
					"offset", r.Offset, "dlq_topic", dl.Topic, "error", err)
			}
			return nil
		}
	}
}
