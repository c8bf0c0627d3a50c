package aiconsumer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/telemetry"
)

// What a user is told while an answer is late (the content of a status
// envelope, state delayed): one sentence per cause, the cause being what
// the model client waits for (llm.Wait.Notify).
const (
	DelayedBusyMessage    = "The assistant is busy right now; your answer is on its way."
	DelayedTroubleMessage = "The assistant is having trouble right now; your answer is on its way."
)

// delayedMessage is the sentence for a reason of llm.Wait.Notify.
func delayedMessage(reason string) string {
	if reason == llm.WaitRateLimited {
		return DelayedBusyMessage
	}
	return DelayedTroubleMessage // failing, or its breaker open
}

// lateNotice sends one status envelope (delayed) for a message whose model
// call is waiting for the model — rate limited, failing or refused by an
// open breaker — once ANSWER_DELAYED_AFTER has passed since the message
// was accepted: when that time comes if the call has waited by then, or at
// its first wait after it.
//
// Three seconds: an ack is instant and a healthy model starts answering
// within a second or two, so a user starts to wonder at about three; and
// one retry after a hiccup (250 ms–1 s) is over before it, so a blip makes
// no news. A model that is slow but healthy makes none either: it is not
// late, it is thinking (a streaming client sees it think), and telling
// every long answer "delayed" would make the news mean nothing.
//
// One per message, not per retry nor per change of cause: what the user
// should do (wait) does not change, and a redelivery or record retry
// does not repeat it (recordState.delayed). It holds a timer and this
// struct per message in flight: bounded by AI_MAX_IN_FLIGHT.
type lateNotice struct {
	mu     sync.Mutex
	reason string // why the call last waited; "" while it has not
	due    bool   // ANSWER_DELAYED_AFTER has passed
	done   bool   // the call is over: its answer or error comes next
	st     *recordState
	timer  *time.Timer
	send   func(reason string)
}

// newLateNotice watches the model call for in; stop ends it.
func (s *Service) newLateNotice(ctx context.Context, in *envelope.Envelope, st *recordState) *lateNotice {
	n := &lateNotice{st: st, send: s.statusSender(ctx, in)}
	at := time.Now().Add(s.cfg.DelayedAfter)
	if !in.Timestamp.IsZero() {
		at = in.Timestamp.Add(s.cfg.DelayedAfter)
	}
	if n.due = !time.Now().Before(at); !n.due {
		n.timer = time.AfterFunc(time.Until(at), n.arrive)
	}
	return n
}

// heard is the call's llm.Wait.Notify: it waits, for reason.
func (n *lateNotice) heard(reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reason = reason
	n.sendLocked()
}

func (n *lateNotice) arrive() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.due = true
	n.sendLocked()
}

// sendLocked sends the news if it is due and not sent. Under the lock, so
// that once stop returned nothing is produced: the status goes to the
// partition before the answer, never after it.
func (n *lateNotice) sendLocked() {
	if n.done || !n.due || n.reason == "" || n.st.delayed.Load() {
		return
	}
	n.st.delayed.Store(true)
	n.send(n.reason)
}

// stop ends the watch: the call is over.
func (n *lateNotice) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.done = true
	if n.timer != nil {
		n.timer.Stop()
	}
}

// statusSender produces in's status envelope to the responses topic
// without waiting, with the message's trace context, as chunks are.
func (s *Service) statusSender(ctx context.Context, in *envelope.Envelope) func(reason string) {
	return func(reason string) {
		s.m.delayed.WithLabelValues(reason).Inc()
		s.log.InfoContext(ctx, "answer delayed; status sent", "message_id", in.ID, "reason", reason)
		s.out.Status(ctx, &envelope.Envelope{
			Type: envelope.TypeStatus, State: envelope.StateDelayed, ID: ids.New(), ReplyTo: in.ID,
			UserID: in.UserID, ClientID: in.ClientID, CorrelationID: in.CorrelationID,
			Content: delayedMessage(reason), Timestamp: time.Now().UTC(),
		})
	}
}

// deadline is when the message stops waiting for the model: ANSWER_DEADLINE
// after the gateway accepted it, so a redelivered message keeps the time it
// had. Zero (no acceptance time): the model client counts from the call.
func (s *Service) deadline(in *envelope.Envelope) time.Time {
	if in.Timestamp.IsZero() {
		return time.Time{}
	}
	return in.Timestamp.Add(s.cfg.LLM.AnswerDeadline)
}

// slot is the model call's llm.Wait.Acquire: before each request to the
// model, a local slot (LLM_MAX_CONCURRENCY) and then the shared quota; the
// returned function frees both and times the request. Taken per request,
// so a message waiting between requests (a backoff, Retry-After, an open
// breaker) holds neither.
func (s *Service) slot(callID string, est int) func(context.Context) (func(), error) {
	return func(ctx context.Context) (func(), error) {
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		release, err := s.quota.Acquire(ctx, callID, est)
		if err != nil {
			<-s.slots
			return nil, fmt.Errorf("ai-consumer: model quota: %w", err)
		}
		s.m.inflight.Inc()
		start := time.Now()
		return func() {
			telemetry.ObserveWithTrace(s.m.latency, time.Since(start).Seconds(), trace.SpanFromContext(ctx))
			s.m.inflight.Dec()
			release()
			<-s.slots
		}, nil
	}
}
