// Package relay is the message-relay service: it consumes answers from the
// responses topic and publishes each on its user's Redis channel, committing
// a record only after Redis accepted it. It owns the handling of one answer
// record; what it needs from Redis is one small interface (store), so the
// handler is tested with an in-memory fake.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/redisbus"
	"github.com/chatrelay/chat/internal/rediskeys"
	"github.com/chatrelay/chat/internal/telemetry"
)

// Config is the relay's configuration.
type Config struct {
	Kafka       config.Kafka
	Fetch       config.KafkaFetch
	Redis       config.Redis
	History     history.Config
	Group       string        `env:"RELAY_GROUP" envDefault:"message-relay"`
	MaxInFlight int           `env:"RELAY_MAX_IN_FLIGHT" envDefault:"1024"`
	Drain       time.Duration `env:"RELAY_DRAIN_TIMEOUT" envDefault:"10s"`
}

// Validate checks the relay's settings.
func (c Config) Validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	if err := c.Fetch.Validate(); err != nil {
		return err
	}
	if err := c.History.Validate(); err != nil {
		return err
	}
	if c.MaxInFlight < 1 {
		return errors.New("RELAY_MAX_IN_FLIGHT: must be at least 1")
	}
	if c.Group == "" {
		return errors.New("RELAY_GROUP: must not be empty")
	}
	return nil
}

// store is the user's history and live channel, as the relay uses them.
type store interface {
	// AppendPublish appends answer to the user's history once per response
	// id and publishes payload on channel with the answer's cursor written
	// where placeholder is, in one round trip; it returns the cursor, the
	// first append's for a redelivered answer (history.Store).
	AppendPublish(ctx context.Context, answer *envelope.Envelope, channel string, payload []byte, placeholder string) (string, error)
	// Publish sends e on its user's channel, without the history (chunks).
	Publish(ctx context.Context, e *envelope.Envelope) error
}

// redisStore is the store on Redis.
type redisStore struct {
	*history.Store
	rdb redis.UniversalClient
}

func (s redisStore) Publish(ctx context.Context, e *envelope.Envelope) error {
	return redisbus.Publish(ctx, s.rdb, e)
}

// Relay is the running service.
type Relay struct {
	cfg    Config
	log    *slog.Logger
	store  store
	rdb    redis.UniversalClient // nil in unit tests
	worker *kafka.Worker         // nil in unit tests

	publishSeconds prometheus.Histogram
	publishErrors  prometheus.Counter
}

// New connects the relay's clients and creates its topics when missing.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	rdb, err := redisbus.NewClient(cfg.Redis.URL)
	if err != nil {
		return nil, err
	}
	r := newRelay(cfg, log, reg, redisStore{Store: history.New(rdb, cfg.History), rdb: rdb})
	r.rdb = rdb
	w, err := kafka.NewWorker(ctx, kafka.WorkerConfig{
		Kafka: cfg.Kafka, Fetch: cfg.Fetch, ClientID: "message-relay", Group: cfg.Group, Topic: kafka.TopicResponses,
		MaxInFlight: cfg.MaxInFlight, Drain: cfg.Drain, Log: log, Registerer: reg,
	}, r.handle)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	r.worker = w
	return r, nil
}

// newRelay builds the handler's side of the relay on st, without clients of
// its own: New adds them, unit tests pass a fake.
func newRelay(cfg Config, log *slog.Logger, reg prometheus.Registerer, st store) *Relay {
	r := &Relay{cfg: cfg, log: log, store: st}
	r.publishSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: telemetry.Namespace, Subsystem: "redis", Name: "publish_seconds",
		Help:    "Latency of storing an answer in its user's history and publishing it on the user's Redis channel (one round trip).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	})
	r.publishErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "redis", Name: "publish_errors_total",
		Help: "Failed publishes to Redis (each is retried).",
	})
	reg.MustRegister(r.publishSeconds, r.publishErrors)
	return r
}

// Checks are the relay's readiness checks.
func (r *Relay) Checks() map[string]ops.Check {
	return map[string]ops.Check{
		"relay.kafka": r.worker.Ping,
		"relay.redis": func(ctx context.Context) error { return redisbus.Ping(ctx, r.rdb) },
	}
}

// Run relays until ctx ends, then drains in order: the consumer finishes
// and commits, then the producer flushes, then the clients close.
func (r *Relay) Run(ctx context.Context) error {
	err := r.worker.Run(ctx)
	_ = r.rdb.Close()
	return err
}

// tracer makes the producer span of each publish.
var tracer = otel.Tracer("github.com/chatrelay/chat/internal/relay")

// handle appends one answer (with its question) to the user's history, then
// publishes it with its history cursor. The append is idempotent per
// response id, so a redelivered record neither duplicates the history nor
// changes the cursor clients de-duplicate on. A record that does not decode
// is permanent (dead-lettered); a Redis failure is returned and retried.
func (r *Relay) handle(ctx context.Context, rec *kgo.Record) error {
	e, err := envelope.Unmarshal(rec.Value)
	if err != nil {
		return kafka.Permanent(fmt.Errorf("relay: %w", err))
	}
	if e.Type == envelope.TypeMessage {
		return kafka.Permanent(fmt.Errorf("relay: %w: a user message on the responses topic", envelope.ErrInvalid))
	}
	if e.Type == envelope.TypeChunk || e.Type == envelope.TypeStatus {
		// Chunks (a live preview) and status news (an answer is late) are
		// not kept in the history: the final answer holds what counts.
		// They are just passed on.
		if err := r.store.Publish(ctx, e); err != nil {
			r.publishErrors.Inc()
			return fmt.Errorf("relay: %w", err)
		}
		return nil
	}
	// The answer is stored and published in one round trip; the published
	// copy carries the cursor the append makes, written by Redis in place
	// of a random placeholder.
	// The producer span is the parent the delivering gateway continues.
	channel := rediskeys.Live(e.UserID)
	ctx, span := tracer.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer), telemetry.CorrelationStart(ctx,
		attribute.String("messaging.system", "redis"), attribute.String("messaging.operation.type", "publish"),
		attribute.String("messaging.destination.name", channel), attribute.String("messaging.message.id", e.ID)))
	defer span.End()
	pub := *e
	placeholder := ids.New()
	pub.Cursor, pub.Question = placeholder, ""
	payload, err := redisbus.Payload(ctx, &pub)
	if err != nil {
		return kafka.Permanent(fmt.Errorf("relay: %w", err))
	}
	start := time.Now()
	cursor, err := r.store.AppendPublish(ctx, e, channel, payload, placeholder)
	if err != nil {
		r.publishErrors.Inc()
		span.RecordError(err)
		span.SetStatus(codes.Error, "store and publish failed")
		return fmt.Errorf("relay: %w", err)
	}
	r.publishSeconds.Observe(time.Since(start).Seconds())
	r.log.DebugContext(ctx, "answer published", "response_id", e.ID, "reply_to", e.ReplyTo, "cursor", cursor)
	return nil
}
