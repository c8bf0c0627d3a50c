package kafka

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/telemetry"
)

// HandlerMetrics are the RED metrics of record processing.
type HandlerMetrics struct {
	records  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHandlerMetrics registers the metrics on reg.
func NewHandlerMetrics(reg prometheus.Registerer) *HandlerMetrics {
	m := &HandlerMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "kafka", Name: "records_processed_total",
			Help: "Records handled by a consumer, by topic and outcome (ok, error, canceled).",
		}, []string{"topic", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "kafka", Name: "record_processing_seconds",
			Help: "Time to handle one record, retries included.",
			// From sub-millisecond relays up to slow model calls.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"topic"}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.duration)
	}
	return m
}

// Init creates the series of topics at zero, so rates exist before traffic.
func (m *HandlerMetrics) Init(topics ...string) *HandlerMetrics {
	for _, t := range topics {
		for _, o := range []string{"ok", "error", "canceled"} {
			m.records.WithLabelValues(t, o)
		}
		m.duration.WithLabelValues(t)
	}
	return m
}

// Metrics counts each record's outcome and observes its handling time.
func Metrics(m *HandlerMetrics) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) error {
			start := time.Now()
			err := next(ctx, r)
			outcome := "ok"
			switch {
			case err == nil:
			case errors.Is(err, context.Canceled):
				outcome = "canceled"
			default:
				outcome = "error"
			}
			m.records.WithLabelValues(r.Topic, outcome).Inc()
			m.duration.WithLabelValues(r.Topic).Observe(time.Since(start).Seconds())
			return err
		}
	}
}
