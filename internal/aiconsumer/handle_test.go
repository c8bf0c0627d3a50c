package aiconsumer

import (
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
)

func TestRedeliveredMessageReusesTheStoredAnswer(t *testing.T) {
	r := newRig(t, nil)
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	// The same message again, as after a crash before the commit: a new
	// record, a first attempt, nothing in memory.
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	if r.model.called() != 1 {
		t.Fatalf("model called %d times for one message id, want 1", r.model.called())
	}
	if len(r.out.answers) != 2 || r.out.answers[0].ID != r.out.answers[1].ID {
		t.Fatalf("want the same answer produced twice (one response id), got %+v", r.out.answers)
	}
	if r.budget.reserves != 1 {
		t.Fatalf("budget reserved %d times, want once (the reused answer costs nothing)", r.budget.reserves)
	}
}

// Redis refuses the answer twice after the model gave it: the record retry
// stores it on the third attempt without asking the model again, and the
// budget is settled once.
func TestRedisFailureAfterTheModelAnsweredDoesNotAskAgain(t *testing.T) {
	r := newRig(t, nil)
	r.answers.putFails = 2
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	if r.model.called() != 1 || r.answers.puts != 3 {
		t.Fatalf("model called %d times, %d stores; want 1 call and 3 stores", r.model.called(), r.answers.puts)
	}
	if len(r.out.answers) != 1 || r.out.answers[0].Type != envelope.TypeResponse {
		t.Fatalf("answers produced: %+v", r.out.answers)
	}
	if r.budget.settles != 1 || r.budget.used != 40 {
		t.Fatalf("%d settles, %d tokens used; want one settle of the call's 40", r.budget.settles, r.budget.used)
	}
	if n := len(r.s.states.m); n != 0 {
		t.Fatalf("%d retry states left after the record finished", n)
	}
}

func TestPermanentModelErrorIsOneErrorAnswer(t *testing.T) {
	r := newRig(t, nil)
	r.model.errs = []error{fmt.Errorf("%w: 400 bad request", llm.ErrPermanent)}
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	if r.model.called() != 1 || len(r.out.answers) != 1 {
		t.Fatalf("model called %d times, %d answers; want 1 and 1", r.model.called(), len(r.out.answers))
	}
	if a := r.out.answers[0]; a.Type != envelope.TypeError || a.Content != FailureMessage || a.ReplyTo != "m1" {
		t.Fatalf("answer %+v, want an error answer to m1 saying %q", a, FailureMessage)
	}
	if r.budget.used != 0 {
		t.Fatalf("a failed call keeps %d tokens of its reservation, want it released", r.budget.used)
	}
}

// A call that could not be sent (the quota store away) is not the model's
// failure: it is retried as a record, its reservation released, so only
// the answered call counts.
func TestUnsentModelCallIsARecordRetryThatReleasesTheReservation(t *testing.T) {
	r := newRig(t, nil)
	r.quota.fail = map[int]bool{1: true}
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	if r.model.called() != 1 || len(r.out.answers) != 1 || r.out.answers[0].Type != envelope.TypeResponse {
		t.Fatalf("model called %d times, answers %+v; want 1 call and one response", r.model.called(), r.out.answers)
	}
	if r.budget.reserves != 2 || r.budget.used != 40 {
		t.Fatalf("%d reservations, %d used; want 2 and only the answered call's 40", r.budget.reserves, r.budget.used)
	}
}

func TestBudgetRefusalIsAnErrorAnswerWithoutAModelCall(t *testing.T) {
	r := newRig(t, nil)
	r.budget.limit, r.budget.used = 1000, 999 // one token left
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	if r.model.called() != 0 {
		t.Fatalf("model called %d times with the budget spent", r.model.called())
	}
	if len(r.out.answers) != 1 || r.out.answers[0].Type != envelope.TypeError || r.out.answers[0].Content != protocol.FrameTokenBudget.Message {
		t.Fatalf("answers %+v, want one error answer saying %q", r.out.answers, protocol.FrameTokenBudget.Message)
	}
	if _, stored := r.answers.stored["m1"]; !stored {
		t.Fatal("the refusal is stored like any answer, so a redelivery repeats it")
	}
}

// A burst of one user's messages against a budget of N tokens, with the
// real budget script (in-process Redis): the model answers only while the
// tokens used plus the next call's estimate fit, and the day ends at most
// one answer's tokens beyond its estimate over N.
func TestBurstStaysWithinTheDailyBudget(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	const limit, perCall = 2000, 700
	tokens := ratelimit.NewDailyTokens(rdb, limit)
	r := newRig(t, nil)
	r.s.budget, r.model.tokens = tokens, perCall
	for i := range 20 {
		if err := r.run(t, message(t, "u1", fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	used, err := rdb.Get(t.Context(), ratelimit.DailyTokensKey("u1", time.Now())).Int64()
	if err != nil {
		t.Fatal(err)
	}
	est := int64(estimateTokens(llm.Request{Messages: []llm.Message{{Content: "be brief"}, {Content: "hello there"}}}))
	// 0, 700 and 1400 used each leave room for an estimate of about 260;
	// 2100 does not.
	if r.model.called() != 3 || len(r.out.answers) != 20 {
		t.Fatalf("model answered %d of 20 (all answered: %d); want 3", r.model.called(), len(r.out.answers))
	}
	if used != 3*perCall || used > limit+perCall-est {
		t.Fatalf("used %d of %d; want the three calls' %d, within one call's excess over its estimate", used, limit, 3*perCall)
	}
	for _, a := range r.out.answers[3:] {
		if a.Type != envelope.TypeError || a.Content != protocol.FrameTokenBudget.Message {
			t.Fatalf("answer past the budget: %+v", a)
		}
	}
}

func TestStreamedAnswerSendsNumberedChunks(t *testing.T) {
	r := newRig(t, nil)
	r.model.deltas = []string{"the ", "answer"}
	rec := message(t, "u1", "m1")
	in, _ := envelope.Unmarshal(rec.Value)
	in.Stream = true
	rec, _ = kafka.EnvelopeRecord(kafka.TopicIncoming, in)
	if err := r.run(t, rec); err != nil {
		t.Fatal(err)
	}
	if len(r.out.chunks) != 2 || len(r.out.answers) != 1 {
		t.Fatalf("%d chunks, %d answers", len(r.out.chunks), len(r.out.answers))
	}
	for i, c := range r.out.chunks {
		if c.Seq != i+1 || c.ID != r.out.answers[0].ID || c.Type != envelope.TypeChunk {
			t.Fatalf("chunk %d: %+v (answer id %s)", i, c, r.out.answers[0].ID)
		}
	}
}

func TestRecordThatIsNotAMessageIsPermanent(t *testing.T) {
	r := newRig(t, nil)
	for _, v := range [][]byte{[]byte("{not json"), mustRecord(t, &envelope.Envelope{
		Type: envelope.TypeResponse, ID: "r1", ReplyTo: "m1", UserID: "u1", Content: "x", CorrelationID: "c",
	}).Value} {
		rec := message(t, "u1", "m1")
		rec.Value = v
		if err := r.s.handle(t.Context(), rec); !kafka.IsPermanent(err) {
			t.Fatalf("%q: err %v, want permanent", v, err)
		}
	}
}
