package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/config"
)

// WorkerConfig describes a consume-handle-produce service: ai-consumer and
// message-relay are both one.
type WorkerConfig struct {
	Kafka    config.Kafka
	Fetch    config.KafkaFetch
	ClientID string
	Group    string
	// Topic is consumed; it and its dead-letter topic are created when
	// missing, with Also.
	Topic       string
	Also        []string
	MaxInFlight int
	Drain       time.Duration
	Log         *slog.Logger
	Registerer  prometheus.Registerer
}

// Worker owns a consumer and the producer its handler (and its DLQ) write
// with, and shuts them down in order.
type Worker struct {
	// Producer is for the handler's own output; it is ready before Run.
	Producer *kgo.Client
	consumer *Consumer
	drain    time.Duration
	name     string
}

// NewWorker connects the clients, creates the topics when missing and
// wraps handle in the standard middleware chain (Wrap).
func NewWorker(ctx context.Context, cfg WorkerConfig, handle Handler) (*Worker, error) {
	brokers, err := ParseBrokers(cfg.Kafka.Bootstrap)
	if err != nil {
		return nil, err
	}
	cc := ClientConfig{Brokers: brokers, ClientID: cfg.ClientID, Logger: cfg.Log, Registerer: cfg.Registerer, Linger: cfg.Kafka.Linger}
	w := &Worker{drain: cfg.Drain, name: cfg.ClientID}
	if w.Producer, err = NewClient(cc); err != nil {
		return nil, err
	}
	topics := append([]string{cfg.Topic, cfg.Topic + DLQSuffix}, cfg.Also...)
	if err := EnsureTopics(ctx, w.Producer, cfg.Kafka.Partitions, cfg.Kafka.Replication, topics...); err != nil {
		w.Producer.Close()
		return nil, err
	}
	dlq := NewDLQCounter(cfg.Registerer)
	dlq.WithLabelValues(cfg.Topic)
	h := Wrap(handle, ChainDeps{
		Group: cfg.Group, Log: cfg.Log, Metrics: NewHandlerMetrics(cfg.Registerer).Init(cfg.Topic),
		DLQ: w.Producer, DLQCounter: dlq,
	})
	w.consumer, err = NewConsumer(ConsumerConfig{
		Client: cc, Group: cfg.Group, Topics: []string{cfg.Topic},
		MaxInFlight: cfg.MaxInFlight, DrainTimeout: cfg.Drain,
		SessionTimeout: cfg.Kafka.SessionTimeout,
		FetchMinBytes:  cfg.Fetch.MinBytes, FetchMaxWait: cfg.Fetch.MaxWait,
		InstanceID: cfg.Kafka.Instance(), Fenced: NewFencedCounter(cfg.Registerer),
	}, h)
	if err != nil {
		w.Producer.Close()
		return nil, err
	}
	return w, nil
}

// Ping checks the broker, and that no other instance fenced this one (an
// INSTANCE_ID shared by two replicas), for readiness.
func (w *Worker) Ping(ctx context.Context) error {
	if err := w.consumer.Fenced(); err != nil {
		return err
	}
	return Ping(ctx, w.consumer.Client())
}

// Run consumes until ctx ends, then drains in order: in-flight records
// finish and are committed, the group is left, the producer flushes and
// closes.
func (w *Worker) Run(ctx context.Context) error {
	err := w.consumer.Run(ctx)
	fctx, cancel := context.WithTimeout(context.Background(), w.drain)
	defer cancel()
	if ferr := w.Producer.Flush(fctx); ferr != nil {
		err = errors.Join(err, fmt.Errorf("%s: flush producer: %w", w.name, ferr))
	}
	w.Producer.Close()
	return err
}
