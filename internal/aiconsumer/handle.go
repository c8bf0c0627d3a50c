package aiconsumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// recordState is what the handling of one message keeps from one attempt to
// the next. After a transient error (Redis or the broker away) kafka.Retry
// calls handle again, in this process, with the same record; whatever is
// not kept here is done again. Kept, because doing it again would be wrong
// or costly:
//
//   - answer: the model's answer (or the error answer) not yet stored in
//     Redis. Asking again would cost a second model call and make another
//     response id: the model is called at most once per message id.
//   - stored: Redis holds the answer (answer is the one Put returned, maybe
//     another consumer's); only the produce is left.
//   - held and used: the token budget reservation made for the call and
//     not yet settled, and what the call used. Settling adds a difference,
//     so it must happen once per reservation; one that failed is retried
//     before anything else.
//   - delayed: the user was told the answer is late (a status envelope);
//     once per message is enough (wait.go).
//
// Not kept: the stored-answer lookup and the conversation memory (one cheap
// round trip, needed only before the model call) and the chunk numbering (an
// attempt after the model answered streams nothing).
//
// A redelivery (after a crash or a rebalance) starts with no state: the
// answer stored in Redis is then what keeps the model from being asked
// twice, and an answer lost with its process before Redis stored it is the
// one way a message costs a second call.
type recordState struct {
	answer *envelope.Envelope
	stored bool
	held   *ratelimit.Reservation
	used   int64
	// delayed is set from the status notice's timer, hence atomic.
	delayed atomic.Bool
}

// pending says whether a retry needs this state.
func (st *recordState) pending() bool {
	return st.answer != nil || st.held != nil || st.delayed.Load()
}

// retryStates are the pending states, by message id. An entry lives from an
// attempt that failed transiently with something pending until the record
// is finished: done, failed for good, or given up because its context
// ended (shutdown; the retry middleware stops then too).
type retryStates struct {
	mu sync.Mutex
	m  map[string]*recordState
}

func (r *retryStates) get(id string) *recordState {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.m[id]; st != nil {
		return st
	}
	return &recordState{}
}

func (r *retryStates) keep(id string, st *recordState) {
	r.mu.Lock()
	r.m[id] = st
	r.mu.Unlock()
}

func (r *retryStates) drop(id string) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}

// handle answers one message: a transient error is returned for the record
// retry, with the state it needs kept; a record that is not a message is
// permanent (dead-lettered).
func (s *Service) handle(ctx context.Context, rec *kgo.Record) error {
	in, err := envelope.Unmarshal(rec.Value)
	if err != nil {
		return kafka.Permanent(fmt.Errorf("ai-consumer: %w", err))
	}
	if in.Type != envelope.TypeMessage {
		return kafka.Permanent(fmt.Errorf("ai-consumer: %w: %s on the incoming topic", envelope.ErrInvalid, in.Type))
	}
	st := s.states.get(in.ID)
	err = s.process(ctx, in, st)
	if err != nil && !kafka.IsPermanent(err) && ctx.Err() == nil && st.pending() {
		s.states.keep(in.ID, st)
	} else {
		s.states.drop(in.ID)
	}
	return err
}

// process takes the message as far as st allows: find or make the answer,
// settle the budget, store the answer, produce it.
func (s *Service) process(ctx context.Context, in *envelope.Envelope, st *recordState) error {
	if st.answer == nil {
		if err := s.findOrAnswer(ctx, in, st); err != nil {
			return err
		}
	}
	// Settled before the answer is stored: a record is not done while its
	// reservation is held, or the budget would count the estimate forever.
	if err := s.settle(ctx, st); err != nil {
		return err
	}
	if !st.stored {
		winner, err := s.answers.Put(ctx, st.answer)
		if err != nil {
			return fmt.Errorf("ai-consumer: %w", err)
		}
		st.answer, st.stored = winner, true
	}
	if err := s.out.Answer(ctx, st.answer); err != nil {
		return err
	}
	s.m.answers.WithLabelValues(st.answer.Type).Inc()
	s.log.DebugContext(ctx, "answer produced", "message_id", in.ID, "response_id", st.answer.ID)
	return nil
}

// findOrAnswer reuses the stored answer of a redelivered message (the same
// response id, no model call), or asks the model with the conversation so
// far.
func (s *Service) findOrAnswer(ctx context.Context, in *envelope.Envelope, st *recordState) error {
	stored, recent, err := s.answers.GetWithRecent(ctx, in.UserID, in.ID, s.memoryEntries())
	if err != nil {
		return fmt.Errorf("ai-consumer: %w", err)
	}
	if stored != nil {
		s.m.reused.Inc()
		s.log.InfoContext(ctx, "reusing the stored answer of a redelivered message", "message_id", in.ID, "response_id", stored.ID)
		st.answer, st.stored = stored, true
		return nil
	}
	out, err := s.answer(ctx, in, recent, st)
	if err != nil {
		return err
	}
	st.answer = out
	return nil
}

// settle gives the budget what the held reservation's call used (0 when it
// failed); nothing when none is held.
func (s *Service) settle(ctx context.Context, st *recordState) error {
	if st.held == nil {
		return nil
	}
	if err := s.budget.Settle(ctx, *st.held, st.used); err != nil {
		return fmt.Errorf("ai-consumer: token budget: %w", err)
	}
	st.held, st.used = nil, 0
	return nil
}
