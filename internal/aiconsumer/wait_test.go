package aiconsumer

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
)

// messageAt is the record of user's message id, accepted at t.
func messageAt(t *testing.T, user, id string, at time.Time) *kgo.Record {
	t.Helper()
	return mustRecord(t, &envelope.Envelope{
		Type: envelope.TypeMessage, ID: id, UserID: user, Content: "hello there", CorrelationID: "corr-" + id,
		ClientID: "client-" + id, Timestamp: at.UTC(),
	})
}

// runAll handles each user's records in order, the users at once, as the
// users' lanes do.
func (r *rig) runAll(t *testing.T, lanes map[string][]*kgo.Record) {
	t.Helper()
	var wg sync.WaitGroup
	for _, recs := range lanes {
		wg.Go(func() {
			for _, rec := range recs {
				if err := r.run(t, rec); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

// slotWatch samples, until stopped, how often a model slot is held.
func (r *rig) slotWatch() (stop func() (held, samples int)) {
	var held, samples atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			samples.Add(1)
			if len(r.s.slots) > 0 {
				held.Add(1)
			}
		}
	}()
	return func() (int, int) {
		close(done)
		<-finished
		return int(held.Load()), int(samples.Load())
	}
}

// statusesOf lists the messages the statuses are about, sorted.
func count(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

func statusesOf(statuses []*envelope.Envelope) []string {
	var ids []string
	for _, st := range statuses {
		ids = append(ids, st.ReplyTo)
	}
	slices.Sort(ids)
	return ids
}

// checkStatus checks a status envelope against the message it is about,
// as the relay reads it.
func checkStatus(t *testing.T, st *envelope.Envelope, id string) {
	t.Helper()
	c := *st
	b, err := envelope.Marshal(&c)
	if err == nil {
		_, err = envelope.Unmarshal(b)
	}
	if err != nil {
		t.Errorf("status %+v: %v", st, err)
	}
	if st.Type != envelope.TypeStatus || st.State != envelope.StateDelayed || st.ReplyTo != id || st.ID == "" || st.ID == id ||
		st.UserID == "" || st.ClientID != "client-"+id || st.CorrelationID != "corr-"+id || st.Timestamp.IsZero() {
		t.Errorf("status of %s: %+v", id, st)
	}
	if st.Content != DelayedBusyMessage && st.Content != DelayedTroubleMessage {
		t.Errorf("status of %s says %q, not one of the delayed messages", id, st.Content)
	}
}

// A brownout shorter than the deadline, on the shipped settings: the model
// answers 429 for 2 s and 503 for 2 s. Every message waits for it (no slot
// held meanwhile), is answered by the model within about two seconds of
// its return, and one that waited for the model hears one status before
// its answer.
func TestBrownoutShorterThanTheDeadlineIsAnswered(t *testing.T) {
	r := newRig(t, nil)
	r.model.fail(apiError(http.StatusTooManyRequests))
	back := make(chan time.Time, 1)
	go func() {
		time.Sleep(2 * time.Second)
		r.model.fail(apiError(http.StatusServiceUnavailable))
		time.Sleep(2 * time.Second)
		r.model.fail(nil)
		back <- time.Now()
	}()
	stopWatch := r.slotWatch()
	now := time.Now()
	lanes := map[string][]*kgo.Record{}
	for _, u := range []string{"u1", "u2", "u3"} {
		lanes[u] = []*kgo.Record{messageAt(t, u, u+"-m1", now), messageAt(t, u, u+"-m2", now.Add(100*time.Millisecond))}
	}
	r.runAll(t, lanes)
	held, samples := stopWatch()
	recovered := <-back
	answers, at, statuses := r.out.produced()
	if len(answers) != 6 {
		t.Fatalf("%d answers for 6 messages", len(answers))
	}
	for i, a := range answers {
		if a.Type != envelope.TypeResponse || a.Content != "the answer" {
			t.Errorf("answer %+v, want the model's answer", a)
		}
		// At worst: the open period ends a second after the return, the
		// probes close the breaker, and the waiting calls go within one
		// more open period.
		if late := at[i].Sub(recovered); late > 2*time.Second+500*time.Millisecond {
			t.Errorf("%s answered %v after the model came back", a.ReplyTo, late)
		}
	}
	if held*10 > samples {
		t.Errorf("a model slot was held in %d of %d samples while messages waited", held, samples)
	}
	// The first message of each user waited for the model and hears of
	// it once. The second waited in its lane behind it; it usually finds
	// the model back, but on a slow machine its turn may come while the
	// breaker still lets only its probes through, and then it hears of
	// that too — at most once, like any message.
	got := statusesOf(statuses)
	for _, u := range []string{"u1", "u2", "u3"} {
		if n := count(got, u+"-m1"); n != 1 {
			t.Errorf("%d statuses for %s-m1, want one (it waited for the model): %q", n, u, got)
		}
		if n := count(got, u+"-m2"); n > 1 {
			t.Errorf("%d statuses for %s-m2, want at most one: %q", n, u, got)
		}
	}
	for _, st := range statuses {
		checkStatus(t, st, st.ReplyTo)
		if i, j := slices.Index(r.out.order, st.ReplyTo+"/status"), slices.Index(r.out.order, st.ReplyTo+"/response"); i > j {
			t.Errorf("%s: the status came after the answer (%v)", st.ReplyTo, r.out.order)
		}
	}
}

// An outage longer than the deadline: every message gets exactly one error
// answer, at its own deadline (counted from its acceptance) and not
// earlier, and a message sent once the model is back is answered within a
// second or two.
func TestOutageLongerThanTheDeadlineIsOneErrorAtTheDeadline(t *testing.T) {
	// ANSWER_DEADLINE, a documented knob, at 5 s rather than the shipped
	// minute, so that the test takes seconds.
	const deadline = 5 * time.Second
	r := newRig(t, map[string]string{"ANSWER_DEADLINE": deadline.String()})
	r.model.fail(apiError(http.StatusServiceUnavailable))
	now := time.Now()
	accepted := map[string]time.Time{}
	lanes := map[string][]*kgo.Record{}
	for _, u := range []string{"u1", "u2", "u3"} {
		for k, id := range []string{u + "-m1", u + "-m2"} {
			accepted[id] = now.Add(time.Duration(k) * 500 * time.Millisecond)
			lanes[u] = append(lanes[u], messageAt(t, u, id, accepted[id]))
		}
	}
	r.runAll(t, lanes)
	answers, at, statuses := r.out.produced()
	if len(answers) != 6 {
		t.Fatalf("%d answers for 6 messages", len(answers))
	}
	for i, a := range answers {
		due := accepted[a.ReplyTo].Add(deadline)
		if a.Type != envelope.TypeError || (a.Content != ExhaustedMessage && a.Content != UnavailableMessage) {
			t.Errorf("answer %+v, want an error answer", a)
		}
		if d := at[i].Sub(due); d < 0 || d > 500*time.Millisecond {
			t.Errorf("%s: error answer %v after its deadline, want at it", a.ReplyTo, d)
		}
	}
	if got := statusesOf(statuses); len(got) != 6 || len(slices.Compact(got)) != 6 {
		t.Errorf("statuses for %q, want one for each of the 6 late messages", got)
	}

	r.model.fail(nil)
	back := time.Now()
	if err := r.run(t, messageAt(t, "u4", "u4-m1", back)); err != nil {
		t.Fatal(err)
	}
	answers, at, _ = r.out.produced()
	if last := answers[len(answers)-1]; last.Type != envelope.TypeResponse || at[len(at)-1].Sub(back) > 2*time.Second {
		t.Errorf("after the model came back: %+v after %v, want an answer within 2 s", last, at[len(at)-1].Sub(back))
	}
}

// A model that is slow but answers is not late: no status.
func TestSlowHealthyModelGetsNoStatus(t *testing.T) {
	r := newRig(t, nil)
	r.model.latency = r.s.cfg.DelayedAfter + 500*time.Millisecond
	if err := r.run(t, message(t, "u1", "m1")); err != nil {
		t.Fatal(err)
	}
	if answers, _, statuses := r.out.produced(); len(answers) != 1 || len(statuses) != 0 {
		t.Fatalf("%d answers, %d statuses; want the answer alone", len(answers), len(statuses))
	}
}

// A message past ANSWER_DELAYED_AFTER whose model call failed, and whose
// retry could not be sent (the quota store away): the record retry that
// follows does not repeat the status.
func TestStatusIsNotRepeatedByARecordRetry(t *testing.T) {
	r := newRig(t, nil)
	r.model.errs = []error{apiError(http.StatusServiceUnavailable)}
	r.quota.fail = map[int]bool{2: true}
	if err := r.run(t, messageAt(t, "u1", "m1", time.Now().Add(-10*time.Second))); err != nil {
		t.Fatal(err)
	}
	answers, _, statuses := r.out.produced()
	if len(answers) != 1 || answers[0].Type != envelope.TypeResponse || len(statuses) != 1 {
		t.Fatalf("answers %+v, %d statuses; want the model's answer and one status", answers, len(statuses))
	}
	checkStatus(t, statuses[0], "m1")
	if statuses[0].Content != DelayedTroubleMessage || r.quota.n != 3 || r.model.called() != 2 {
		t.Errorf("status %q after %d quota acquisitions and %d model calls", statuses[0].Content, r.quota.n, r.model.called())
	}
	if n := len(r.s.states.m); n != 0 {
		t.Errorf("%d retry states left after the record finished", n)
	}
}
