package aiconsumer

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// The handler's collaborators, each an interface owned here and as small as
// the handler's use of it: New fills them with Redis, Kafka and the model;
// the unit tests with in-memory fakes.
type deps struct {
	answers answerStore
	out     answerSink
	budget  tokenBudget
	quota   modelQuota
	model   chatModel
}

// answerStore keeps each message's answer under its message id, and reads
// the conversation memory in the same round trip (history.Answers).
type answerStore interface {
	// GetWithRecent returns the stored answer to messageID, or nil and the
	// user's latest n history entries, oldest first.
	GetWithRecent(ctx context.Context, user, messageID string, n int64) (*envelope.Envelope, []history.Turn, error)
	// Put stores answer unless one is stored already, and returns the one
	// that is.
	Put(ctx context.Context, answer *envelope.Envelope) (*envelope.Envelope, error)
}

// answerSink sends answers, and news of them, to the responses topic.
type answerSink interface {
	// Answer returns once the broker acknowledged the answer.
	Answer(ctx context.Context, e *envelope.Envelope) error
	// Chunk sends a piece of a streamed answer without waiting: chunks are
	// a preview, and the final answer carries the whole text.
	Chunk(ctx context.Context, e *envelope.Envelope)
	// Status sends news of a late answer without waiting: it is not
	// stored, and the answer that follows makes it moot.
	Status(ctx context.Context, e *envelope.Envelope)
}

// tokenBudget is the users' daily token budget (ratelimit.DailyTokens).
type tokenBudget interface {
	// Reserve holds estimate tokens for a call; ok is false when the
	// budget cannot hold them.
	Reserve(ctx context.Context, user string, estimate int64) (r ratelimit.Reservation, ok bool, err error)
	// Settle replaces the reservation by what the call used (0: released).
	Settle(ctx context.Context, r ratelimit.Reservation, used int64) error
}

// modelQuota waits for room under the quota every instance shares
// (ratelimit.Model); the returned function ends the call.
type modelQuota interface {
	Acquire(ctx context.Context, callID string, tokens int) (func(), error)
}

// chatModel is the model with its retries and breaker (llm.Resilient).
type chatModel interface {
	Name() string
	Complete(ctx context.Context, req llm.Request) (llm.Response, error)
	Stream(ctx context.Context, req llm.Request, onDelta func(string)) (llm.Response, error)
}

// kafkaAnswers is the answerSink on the worker's producer.
type kafkaAnswers struct {
	p   *kgo.Client
	log *slog.Logger
}

func (k kafkaAnswers) Answer(ctx context.Context, e *envelope.Envelope) error {
	r, err := kafka.EnvelopeRecord(kafka.TopicResponses, e)
	if err != nil {
		return fmt.Errorf("ai-consumer: answer record: %w", err)
	}
	r.Context = ctx
	if err := k.p.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("ai-consumer: produce answer: %w", err)
	}
	return nil
}

func (k kafkaAnswers) Chunk(ctx context.Context, e *envelope.Envelope) { k.produce(ctx, e) }

func (k kafkaAnswers) Status(ctx context.Context, e *envelope.Envelope) { k.produce(ctx, e) }

// produce sends e without waiting for the broker, in order behind what
// was produced before it on the user's partition.
func (k kafkaAnswers) produce(ctx context.Context, e *envelope.Envelope) {
	r, err := kafka.EnvelopeRecord(kafka.TopicResponses, e)
	if err != nil {
		return
	}
	k.p.Produce(context.WithoutCancel(ctx), r, func(_ *kgo.Record, err error) {
		if err != nil {
			k.log.WarnContext(ctx, e.Type+" not produced", "reply_to", e.ReplyTo, "seq", e.Seq, "error", err)
		}
	})
}
