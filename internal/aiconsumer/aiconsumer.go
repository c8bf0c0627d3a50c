// Package aiconsumer is the ai-consumer service: for each user message on
// incoming_messages it asks the model and produces the answer to responses,
// committing the message only after the answer was acknowledged.
package aiconsumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/redisbus"
	"github.com/chatrelay/chat/internal/telemetry"
)

// What a user is told when their message cannot be answered; details stay
// in the logs.
const (
	FailureMessage     = "Sorry, the assistant could not answer this message."
	UnavailableMessage = "Service temporarily unavailable"
	ExhaustedMessage   = "The assistant could not answer right now; please send your message again."
)

// Service is the running ai-consumer.
type Service struct {
	cfg     Config
	log     *slog.Logger
	model   *llm.Resilient
	slots   chan struct{}
	rdb     redis.UniversalClient
	history *history.Store
	answers *history.Answers
	tokens  *ratelimit.DailyTokens
	quota   *ratelimit.Model
	// unsaved holds answers given by the model and not yet stored in Redis,
	// by message id (only while a record is being retried).
	unsaved  sync.Map
	worker   *kafka.Worker
	producer *kgo.Client // the worker's, for the answers
	m        *metrics
	tracer   trace.Tracer
}

// NewModel picks the model the configuration asks for.
func NewModel(cfg Config) llm.Model {
	if cfg.Offline {
		return llm.Offline{Latency: cfg.OfflineLatency}
	}
	return llm.NewOpenAI(llm.OpenAIConfig{APIKey: cfg.APIKey, BaseURL: cfg.BaseURL, Model: cfg.Model, Timeout: cfg.Timeout})
}

// New connects the service's clients and creates its topics when missing.
func New(ctx context.Context, cfg Config, model llm.Model, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	rdb, err := redisbus.NewClient(cfg.Redis.URL)
	if err != nil {
		return nil, err
	}
	m := newMetrics(reg)
	s := &Service{
		cfg: cfg, log: log, model: llm.NewResilient(model, cfg.LLM, m), m: m, rdb: rdb,
		slots:   make(chan struct{}, cfg.MaxConcurrency),
		history: history.New(rdb, cfg.History), answers: history.NewAnswers(rdb, cfg.AnswerTTL),
		tokens: ratelimit.NewDailyTokens(rdb, cfg.Limits.UserTokensPerDay),
		quota:  ratelimit.NewModel(rdb, cfg.ModelLimits),
		tracer: otel.Tracer("github.com/chatrelay/chat/internal/aiconsumer"),
	}
	w, err := kafka.NewWorker(ctx, kafka.WorkerConfig{
		Kafka: cfg.Kafka, ClientID: "ai-consumer", Group: cfg.Group, Topic: kafka.TopicIncoming,
		Also: []string{kafka.TopicResponses}, MaxInFlight: cfg.MaxInFlight, Drain: cfg.Drain, Log: log, Registerer: reg,
	}, s.handle)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	s.worker, s.producer = w, w.Producer
	log.Info("ai-consumer model", "model", model.Name(), "offline", cfg.Offline)
	return s, nil
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

func (s *Service) handle(ctx context.Context, rec *kgo.Record) error {
	in, err := envelope.Unmarshal(rec.Value)
	if err != nil {
		return kafka.Permanent(fmt.Errorf("ai-consumer: %w", err))
	}
	if in.Type != envelope.TypeMessage {
		return kafka.Permanent(fmt.Errorf("ai-consumer: %w: %s on the incoming topic", envelope.ErrInvalid, in.Type))
	}
	// A redelivered message reuses its stored answer: the model is called at
	// most once per message id, and the response id stays the same. An
	// answer the model gave but Redis could not store yet waits in memory,
	// so retrying the record during a Redis outage does not ask again.
	var out *envelope.Envelope
	if v, ok := s.unsaved.Load(in.ID); ok {
		out = v.(*envelope.Envelope)
	} else {
		stored, recent, err := s.answers.GetWithRecent(ctx, in.UserID, in.ID, s.memoryEntries())
		if err != nil {
			return err
		}
		if stored != nil {
			s.m.reused.Inc()
			s.log.InfoContext(ctx, "reusing the stored answer of a redelivered message", "message_id", in.ID, "response_id", stored.ID)
			out = stored
		} else {
			if out, err = s.answer(ctx, in, recent); err != nil {
				return err
			}
			s.unsaved.Store(in.ID, out)
		}
	}
	if _, pending := s.unsaved.Load(in.ID); pending {
		winner, err := s.answers.Put(ctx, out)
		if err != nil {
			return err
		}
		s.unsaved.Delete(in.ID)
		out = winner
	}
	r, err := kafka.EnvelopeRecord(kafka.TopicResponses, out)
	if err != nil {
		return err
	}
	r.Context = ctx
	if err := s.producer.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("ai-consumer: produce answer: %w", err)
	}
	s.m.answers.WithLabelValues(out.Type).Inc()
	s.log.DebugContext(ctx, "answer produced", "message_id", in.ID, "response_id", out.ID)
	return nil
}

// answer asks the model, with the user's recent history as context, and
// builds the answer envelope; a permanent model failure becomes an error
// answer for the user. Transient failures are returned for retry.
func (s *Service) answer(ctx context.Context, in *envelope.Envelope, recent []history.Turn) (*envelope.Envelope, error) {
	memory := s.memory(recent)
	out := &envelope.Envelope{
		Type:          envelope.TypeResponse,
		ID:            ids.New(),
		ReplyTo:       in.ID,
		UserID:        in.UserID,
		ClientID:      in.ClientID,
		CorrelationID: in.CorrelationID,
		AcceptedAt:    in.Timestamp,
		Question:      in.Content,
	}
	msgs := make([]llm.Message, 0, len(memory)+2)
	msgs = append(msgs, llm.Message{Role: llm.RoleSystem, Content: s.cfg.SystemPrompt})
	msgs = append(msgs, memory...)
	msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: in.Content})
	var onDelta func(string)
	if in.Stream {
		onDelta = s.chunkProducer(ctx, out)
	}
	resp, err := s.complete(ctx, in, llm.Request{Messages: msgs}, onDelta)
	switch {
	case err == nil:
		out.Content = resp.Content
		// The user's daily budget is checked by the gateway before a
		// message is accepted; the cost is only known now.
		if _, terr := s.tokens.Spend(ctx, in.UserID, int64(resp.PromptTokens+resp.CompletionTokens)); terr != nil {
			s.log.WarnContext(ctx, "token budget not updated", "error", terr)
		}
	case llm.IsPermanent(err), errors.Is(err, llm.ErrUnavailable), errors.Is(err, llm.ErrExhausted):
		// The user gets one error frame instead of silence, and the message
		// is done. Details are logged here, once.
		s.log.ErrorContext(ctx, "message not answered", "message_id", in.ID, "error", err)
		out.Type = envelope.TypeError
		switch {
		case errors.Is(err, llm.ErrUnavailable):
			out.Content = UnavailableMessage
		case errors.Is(err, llm.ErrExhausted):
			out.Content = ExhaustedMessage
		default:
			out.Content = FailureMessage
		}
	default:
		return nil, err
	}
	out.Timestamp = time.Now().UTC()
	return out, nil
}

// chunkProducer returns the callback that sends each piece of a streamed
// answer to the responses topic as a chunk, numbered from 1. Chunks go out
// without waiting for the broker: they are a preview, in order behind one
// another on the user's partition, and the final response (produced and
// acknowledged after them) carries the whole text.
func (s *Service) chunkProducer(ctx context.Context, out *envelope.Envelope) func(string) {
	seq := 0
	return func(delta string) {
		seq++
		c := &envelope.Envelope{
			Type: envelope.TypeChunk, ID: out.ID, ReplyTo: out.ReplyTo, UserID: out.UserID, Content: delta,
			ClientID: out.ClientID, CorrelationID: out.CorrelationID, Timestamp: time.Now().UTC(), Seq: seq,
		}
		r, err := kafka.EnvelopeRecord(kafka.TopicResponses, c)
		if err != nil {
			return
		}
		s.producer.Produce(context.WithoutCancel(ctx), r, func(_ *kgo.Record, err error) {
			if err != nil {
				s.log.WarnContext(ctx, "chunk not produced", "seq", c.Seq, "error", err)
			}
		})
	}
}

// memoryEntries is how many history entries (questions and answers) the
// conversation memory reads.
func (s *Service) memoryEntries() int64 { return int64(2 * s.cfg.MemoryTurns) }

// memory turns the user's recent history into conversation turns, newest
// kept first within the character budget, so the chat is a conversation.
func (s *Service) memory(entries []history.Turn) []llm.Message {
	budget := s.cfg.MemoryChars
	start := len(entries)
	for i := len(entries) - 1; i >= 0; i-- {
		if budget -= len(entries[i].Content); budget < 0 {
			break
		}
		start = i
	}
	out := make([]llm.Message, 0, len(entries)-start)
	for _, e := range entries[start:] {
		switch e.Type {
		case envelope.TypeMessage:
			out = append(out, llm.Message{Role: llm.RoleUser, Content: e.Content})
		case envelope.TypeResponse:
			out = append(out, llm.Message{Role: llm.RoleAssistant, Content: e.Content})
		}
	}
	// A conversation sent to the model starts with the user.
	for len(out) > 0 && out[0].Role != llm.RoleUser {
		out = out[1:]
	}
	return out
}

// complete asks the model inside a GenAI client span.
func (s *Service) complete(ctx context.Context, in *envelope.Envelope, req llm.Request, onDelta func(string)) (llm.Response, error) {
	ctx, span := s.tracer.Start(ctx, "chat "+s.model.Name(), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("gen_ai.operation.name", "chat"),
			attribute.String("gen_ai.system", "openai"),
			attribute.String("gen_ai.request.model", s.model.Name()),
			attribute.String("correlation_id", in.CorrelationID),
			attribute.Int("retry.attempt", kafka.Attempt(ctx)),
		))
	defer span.End()
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return llm.Response{}, ctx.Err()
	}
	s.m.inflight.Inc()
	defer func() { <-s.slots; s.m.inflight.Dec() }()
	release, err := s.quota.Acquire(ctx, in.ID, estimateTokens(req))
	if err != nil {
		return llm.Response{}, err
	}
	defer release()
	start := time.Now()
	var resp llm.Response
	if onDelta != nil {
		resp, err = s.model.Stream(ctx, req, onDelta)
	} else {
		resp, err = s.model.Complete(ctx, req)
	}
	telemetry.ObserveWithTrace(s.m.latency, time.Since(start).Seconds(), span)
	if err != nil {
		s.m.requests.WithLabelValues(llm.ErrorClass(err)).Inc()
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return llm.Response{}, err
	}
	s.m.requests.WithLabelValues("ok").Inc()
	s.m.tokens.WithLabelValues("prompt").Add(float64(resp.PromptTokens))
	s.m.tokens.WithLabelValues("completion").Add(float64(resp.CompletionTokens))
	span.SetAttributes(
		attribute.String("gen_ai.response.model", resp.Model),
		attribute.Int("gen_ai.usage.input_tokens", resp.PromptTokens),
		attribute.Int("gen_ai.usage.output_tokens", resp.CompletionTokens),
	)
	return resp, nil
}

// estimateTokens guesses a call's cost before it is made (about four
// characters a token, plus room for the answer), for the per-minute quota.
func estimateTokens(req llm.Request) int {
	n := 0
	for _, m := range req.Messages {
		n += len(m.Content)
	}
	return n/4 + 256
}
