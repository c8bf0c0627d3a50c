package aiconsumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/telemetry"
)

// answer asks the model, with the user's recent history as context, and
// builds the answer envelope. A message the budget cannot pay for, or that
// the model fails permanently, becomes an error answer for the user;
// transient failures are returned for retry.
func (s *Service) answer(ctx context.Context, in *envelope.Envelope, recent []history.Turn, st *recordState) (*envelope.Envelope, error) {
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
	memory := s.memory(recent)
	msgs := make([]llm.Message, 0, len(memory)+2)
	msgs = append(msgs, llm.Message{Role: llm.RoleSystem, Content: s.cfg.SystemPrompt})
	msgs = append(msgs, memory...)
	msgs = append(msgs, llm.Message{Role: llm.RoleUser, Content: in.Content})
	var onDelta func(string)
	if in.Stream {
		onDelta = s.chunkProducer(ctx, out)
	}
	resp, failed, err := s.callModel(ctx, in, llm.Request{Messages: msgs}, onDelta, st)
	if err != nil {
		return nil, err
	}
	if failed {
		out.Type = envelope.TypeError
	}
	// Model names the model that answered (a fallback, maybe); an error
	// answer has none.
	out.Content, out.Model, out.Timestamp = resp.Content, resp.Model, time.Now().UTC()
	return out, nil
}

// callModel reserves the call's estimated tokens against the user's daily
// budget, calls the model and leaves in st what it used, for settling. It
// returns the answer, or (failed) only the user's error text when the
// budget is spent (no call) or the model failed for good (then st says it
// used nothing, which releases the reservation).
//
// The budget's bound: one user's messages are handled in order (a lane per
// user in internal/kafka), so at most one reservation of a user is in
// flight, and a call starts only if the tokens used so far plus its
// estimate fit the limit. The day's count therefore ends at most one
// answer's tokens beyond its estimate over the limit (docs/security.md).
func (s *Service) callModel(ctx context.Context, in *envelope.Envelope, req llm.Request, onDelta func(string), st *recordState) (answer llm.Response, failed bool, err error) {
	est := estimateTokens(req)
	r, ok, err := s.budget.Reserve(ctx, in.UserID, int64(est))
	if err != nil {
		return llm.Response{}, false, fmt.Errorf("ai-consumer: %w", err)
	}
	if !ok {
		s.log.InfoContext(ctx, "message not answered: daily token budget spent", "message_id", in.ID)
		return llm.Response{Content: protocol.FrameTokenBudget.Message}, true, nil
	}
	st.held, st.used = &r, 0
	late := s.newLateNotice(ctx, in, st)
	defer late.stop()
	resp, err := s.complete(ctx, in, req, onDelta, llm.Wait{Until: s.deadline(in), Notify: late.heard, Acquire: s.slot(in.ID, est)})
	if err == nil {
		// A provider that reports no usage is charged the estimate.
		st.used = int64(resp.PromptTokens + resp.CompletionTokens)
		if st.used == 0 {
			st.used = r.Tokens
		}
		return resp, false, nil
	}
	if msg := userMessage(err); msg != "" {
		// The user gets one error frame instead of silence, and the
		// message is done. Details are logged here, once.
		s.log.ErrorContext(ctx, "message not answered", "message_id", in.ID, "error", err)
		return llm.Response{Content: msg}, true, nil
	}
	// A transient failure: release now; if that fails too, the next
	// attempt settles it before anything else.
	if serr := s.settle(ctx, st); serr != nil {
		s.log.WarnContext(ctx, "token reservation not released", "message_id", in.ID, "error", serr)
	}
	return llm.Response{}, false, err
}

// userMessage is what the user is told about a model failure that ends the
// message, or "" for a failure worth retrying.
func userMessage(err error) string {
	switch {
	case errors.Is(err, llm.ErrUnavailable):
		return UnavailableMessage
	case errors.Is(err, llm.ErrExhausted):
		return ExhaustedMessage
	case llm.IsPermanent(err):
		return FailureMessage
	}
	return ""
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
		s.out.Chunk(ctx, &envelope.Envelope{
			Type: envelope.TypeChunk, ID: out.ID, ReplyTo: out.ReplyTo, UserID: out.UserID, Content: delta,
			ClientID: out.ClientID, CorrelationID: out.CorrelationID, Timestamp: time.Now().UTC(), Seq: seq,
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

// complete asks the model inside a GenAI client span; w says until when
// the call waits for the model and takes a slot for each request (wait.go).
func (s *Service) complete(ctx context.Context, in *envelope.Envelope, req llm.Request, onDelta func(string), w llm.Wait) (llm.Response, error) {
	ctx, span := s.tracer.Start(ctx, "chat "+s.model.Name(), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("gen_ai.operation.name", "chat"),
			attribute.String("gen_ai.system", "openai"),
			attribute.String("gen_ai.request.model", s.model.Name()),
			telemetry.CorrelationAttr.String(in.CorrelationID),
			attribute.Int("retry.attempt", kafka.Attempt(ctx)),
		))
	defer span.End()
	ctx = llm.WithWait(ctx, w)
	var resp llm.Response
	var err error
	if onDelta != nil {
		resp, err = s.model.Stream(ctx, req, onDelta)
	} else {
		resp, err = s.model.Complete(ctx, req)
	}
	if err != nil {
		s.m.requests.WithLabelValues(llm.ErrorClass(err), llm.FailedTarget(err)).Inc()
		span.SetAttributes(attribute.String("llm.target", llm.FailedTarget(err)))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return llm.Response{}, err
	}
	s.m.requests.WithLabelValues("ok", resp.Target).Inc()
	s.m.tokens.WithLabelValues("prompt").Add(float64(resp.PromptTokens))
	s.m.tokens.WithLabelValues("completion").Add(float64(resp.CompletionTokens))
	span.SetAttributes(
		attribute.String("gen_ai.response.model", resp.Model),
		// Which configured model answered (LLM_FALLBACKS): the metric's label.
		attribute.String("llm.target", resp.Target),
		attribute.Int("gen_ai.usage.input_tokens", resp.PromptTokens),
		attribute.Int("gen_ai.usage.output_tokens", resp.CompletionTokens),
	)
	return resp, nil
}

// estimateTokens guesses a call's cost before it is made (about four
// characters a token, plus room for the answer): what the daily budget
// reserves and the per-minute quota takes.
func estimateTokens(req llm.Request) int {
	n := 0
	for _, m := range req.Messages {
		n += len(m.Content)
	}
	return n/4 + 256
}
