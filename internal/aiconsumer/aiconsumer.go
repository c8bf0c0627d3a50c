// Package aiconsumer is the ai-consumer service: for each user message on
// incoming_messages it asks the model and produces the answer to responses,
// committing the message only after the answer was acknowledged.
//
// It owns the handling of one message (handle.go: what survives a retry),
// the model call with the user's token budget (answer.go), and the narrow
// interfaces it needs from Redis, Kafka and the model (seams.go), so the
// handler is tested with in-memory fakes.
package aiconsumer

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/redisbus"
)

// What a user is told when their message cannot be answered; details stay
// in the logs. A message refused for the daily token budget gets the
// gateway's words for the same refusal (protocol.FrameTokenBudget).
const (
	FailureMessage     = "Sorry, the assistant could not answer this message."
	UnavailableMessage = "Service temporarily unavailable"
	ExhaustedMessage   = "The assistant could not answer right now; please send your message again."
)

// Service is the running ai-consumer.
type Service struct {
	deps
	cfg Config
	log *slog.Logger
	// slots holds a place for each request to the model in flight in this
	// instance (LLM_MAX_CONCURRENCY; see New).
	slots  chan struct{}
	states retryStates
	m      *metrics
	tracer trace.Tracer

	rdb    redis.UniversalClient // nil in unit tests
	worker *kafka.Worker         // nil in unit tests
}

// NewModel picks the model the configuration asks for: with LLM_FALLBACKS,
// a router over the primary and its fallbacks.
func NewModel(cfg Config) llm.Model {
	if cfg.Offline {
		return llm.Offline{Latency: cfg.OfflineLatency}
	}
	primary := llm.NewOpenAI(llm.OpenAIConfig{APIKey: cfg.APIKey, BaseURL: cfg.BaseURL, Model: cfg.Model, Timeout: cfg.Timeout})
	fbs, err := cfg.fallbacks()
	if err != nil || len(fbs) == 0 {
		// Validate refuses a bad LLM_FALLBACKS before a service starts.
		return primary
	}
	return newRouter(cfg, primary, fbs)
}

// New connects the service's clients and creates its topics when missing.
//
// A message waits for the model until its answer deadline (ANSWER_DEADLINE
// from its acceptance; llm.Policy says why and what bounds the requests to
// a failing provider), hearing a status (delayed) meanwhile (wait.go), and
// gets its one error answer only at the deadline — or at once when the
// model refuses it for good (400, 401…).
//
// Two retry loops nest here, and they do not multiply model calls:
//   - the record retry (kafka.Retry, in the worker's middleware chain):
//     unbounded while the context lives, exponential backoff 100 ms → 30 s.
//     It retries what is worth waiting for — Redis or the broker away —
//     and, thanks to recordState, never asks the model again for a message
//     it has already answered.
//   - the model client's requests (llm.Resilient: the deadline, a retry
//     budget, a circuit breaker). They end in an answer, or in an error
//     answer (a finished record) at the deadline or for good, so the
//     record retry never re-runs them. What it does re-run is a call that
//     sent nothing (Redis away for the quota: llm.Wait.Acquire's error),
//     and that call's deadline has not moved: a delivery costs at most the
//     requests its deadline allows, plus one per record retry after it.
//     With LLM_FALLBACKS, each model but the last is asked once
//     (llm.Router: the next one is its retry).
//
// Three bounds on concurrency, from the outside in:
//   - AI_MAX_IN_FLIGHT (the worker): records taken from Kafka and not
//     finished, across all users' lanes; it bounds memory and how much is
//     redelivered after a crash. A record waiting for the model, Redis or a
//     model slot keeps its place, and its lane: a user's later messages
//     wait behind it, each until its own deadline. Waiting adds per record
//     only its retry state, a timer and the status notice (no goroutine
//     beyond its lane's): memory stays bounded by this cap. Records beyond
//     it stay in Kafka, so consumer lag grows while the model is out —
//     which is what the lag alerts should say: users are waiting.
//   - LLM_MAX_CONCURRENCY (slots): requests to the model in flight in this
//     instance, which bounds the connections to the provider from this
//     process. Taken per request (wait.go), not held while waiting.
//   - LLM_GLOBAL_MAX_CONCURRENCY (ratelimit.Model): requests in flight
//     across every instance, the provider account's quota, in Redis. It is
//     taken after a local slot, so a request waiting for it holds that slot.
func New(ctx context.Context, cfg Config, model llm.Model, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	rdb, err := redisbus.NewClient(cfg.Redis.URL)
	if err != nil {
		return nil, err
	}
	m := newMetrics(reg)
	s := newService(cfg, log, m, deps{
		answers: history.NewAnswers(rdb, cfg.AnswerTTL),
		budget:  ratelimit.NewDailyTokens(rdb, cfg.Limits.UserTokensPerDay),
		quota:   ratelimit.NewModel(rdb, cfg.ModelLimits),
		model:   routed(model, cfg.LLM, m),
	})
	s.rdb = rdb
	w, err := kafka.NewWorker(ctx, kafka.WorkerConfig{
		Kafka: cfg.Kafka, Fetch: cfg.Fetch, ClientID: "ai-consumer", Group: cfg.Group, Topic: kafka.TopicIncoming,
		Also: []string{kafka.TopicResponses}, MaxInFlight: cfg.MaxInFlight, Drain: cfg.Drain, Log: log, Registerer: reg,
	}, s.handle)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	s.worker, s.out = w, kafkaAnswers{p: w.Producer, log: log}
	log.Info("ai-consumer model", "model", model.Name(), "offline", cfg.Offline)
	return s, nil
}

// newService builds the handler's side of the service on d, without
// clients of its own: New adds them, unit tests pass fakes.
func newService(cfg Config, log *slog.Logger, m *metrics, d deps) *Service {
	return &Service{
		deps: d, cfg: cfg, log: log, m: m,
		slots:  make(chan struct{}, cfg.MaxConcurrency),
		states: retryStates{m: map[string]*recordState{}},
		tracer: otel.Tracer("github.com/chatrelay/chat/internal/aiconsumer"),
	}
}

// Checks are the service's readiness checks.
func (s *Service) Checks() map[string]ops.Check {
	return map[string]ops.Check{
		"ai-consumer.kafka": s.worker.Ping,
		"ai-consumer.redis": func(ctx context.Context) error { return redisbus.Ping(ctx, s.rdb) },
	}
}

// Run consumes until ctx ends, then lets in-flight answers finish, commits,
// flushes the producer and closes.
func (s *Service) Run(ctx context.Context) error {
	err := s.worker.Run(ctx)
	_ = s.rdb.Close()
	return err
}
