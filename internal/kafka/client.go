// Package kafka wraps franz-go for the services: client construction with
// tracing, metrics and logging hooks, topic creation, the record headers of
// the message contract, and a consumer that works on many users at once
// while keeping each user's order and committing only finished work.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Topic names shared by the services.
const (
	TopicIncoming  = "incoming_messages"
	TopicResponses = "responses"
	// DLQSuffix is appended to a topic's name to form its dead-letter topic.
	DLQSuffix = ".dlq"
)

// ClientConfig is what every client needs.
type ClientConfig struct {
	Brokers  []string
	ClientID string
	Logger   *slog.Logger
	// Registerer receives the client's metrics (kprom); nil disables them.
	Registerer prometheus.Registerer
	// Linger batches produced records for up to this long.
	Linger time.Duration
	// DeliveryTimeout bounds how long a produced record may wait for the
	// broker; zero waits as long as the caller's context allows.
	DeliveryTimeout time.Duration
	// Role ("producer" or "consumer") labels the client's metrics, so a
	// service's two clients do not collide in one registry.
	Role string
}

// ParseBrokers splits KAFKA_BOOTSTRAP_SERVERS.
func ParseBrokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("KAFKA_BOOTSTRAP_SERVERS: no broker address given")
	}
	return out, nil
}

// NewClient builds a franz-go client with the hooks every service wants:
// the trace context in record headers (tracectx.go), kprom and kslog. extra options
// (consumer group settings) are appended.
func NewClient(cfg ClientConfig, extra ...kgo.Opt) (*kgo.Client, error) {
	hooks := []kgo.Hook{traceHeaders{}}
	if cfg.Registerer != nil {
		role := cfg.Role
		if role == "" {
			role = "producer"
		}
		reg := prometheus.WrapRegistererWith(prometheus.Labels{"client": role}, cfg.Registerer)
		hooks = append(hooks, kprom.NewMetrics("chat_kafka", kprom.Registerer(reg)))
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.WithHooks(hooks...),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProduceRequestTimeout(10 * time.Second),
	}
	// Records are retried without limit by default (never dropped on a
	// transient error); a delivery timeout turns a long outage into an
	// error the caller can report instead of a silent wait.
	if cfg.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout))
	}
	if cfg.ClientID != "" {
		opts = append(opts, kgo.ClientID(cfg.ClientID))
	}
	if cfg.Logger != nil {
		opts = append(opts, kgo.WithLogger(kslog.New(cfg.Logger.With("component", "franz-go"))))
	}
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// EnsureTopics creates the topics that do not exist yet. An existing topic is
// left as it is, whatever its partition count. A topic replicated three
// times or more gets min.insync.replicas=2 (topicConfigs).
func EnsureTopics(ctx context.Context, cl *kgo.Client, partitions int32, replication int16, topics ...string) error {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, replication, topicConfigs(replication), topics...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// Ping checks that a broker answers, for readiness probes.
func Ping(ctx context.Context, cl *kgo.Client) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

// topicConfigs are the settings of the topics the services create. The
// producers write with acks=all and idempotence (franz-go's defaults, which
// NewClient keeps), so a record is acknowledged once every in-sync replica
// has it; min.insync.replicas=2 makes "every in-sync replica" at least two
// when the topic has three replicas, so one broker's loss never takes an
// acknowledged record along (the broker default of 1 lets a leader that is
// alone in its ISR acknowledge by itself). With fewer replicas the broker
// default stays: 2 of 2 would stop every write while one broker is down.
func topicConfigs(replication int16) map[string]*string {
	if replication < 3 {
		return nil
	}
	two := "2"
	return map[string]*string{"min.insync.replicas": &two}
}
