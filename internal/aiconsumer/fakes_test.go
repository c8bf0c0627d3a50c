package aiconsumer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// In-memory stand-ins for the handler's collaborators (seams.go).

var errRedisDown = errors.New("redis: connection refused")

// fakeAnswers is the answer store; putFails makes that many Puts fail.
type fakeAnswers struct {
	mu       sync.Mutex
	stored   map[string]*envelope.Envelope
	putFails int
	puts     int
}

func (f *fakeAnswers) GetWithRecent(_ context.Context, _, messageID string, _ int64) (*envelope.Envelope, []history.Turn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.stored[messageID]; e != nil {
		c := *e
		return &c, nil, nil
	}
	return nil, nil, nil
}

func (f *fakeAnswers) Put(_ context.Context, answer *envelope.Envelope) (*envelope.Envelope, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts++
	if f.putFails > 0 {
		f.putFails--
		return nil, errRedisDown
	}
	if prev := f.stored[answer.ReplyTo]; prev != nil {
		return prev, nil
	}
	if f.stored == nil {
		f.stored = map[string]*envelope.Envelope{}
	}
	f.stored[answer.ReplyTo] = answer
	return answer, nil
}

// fakeSink records what would go to the responses topic.
type fakeSink struct {
	mu      sync.Mutex
	answers []*envelope.Envelope
	chunks  []*envelope.Envelope
}

func (f *fakeSink) Answer(_ context.Context, e *envelope.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers = append(f.answers, e)
	return nil
}

func (f *fakeSink) Chunk(_ context.Context, e *envelope.Envelope) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chunks = append(f.chunks, e)
}

// fakeBudget is a daily budget with the real one's rule: a reservation is
// refused when used plus the estimate would pass the limit.
type fakeBudget struct {
	mu                sync.Mutex
	limit, used       int64
	reserves, settles int
}

func (f *fakeBudget) Reserve(_ context.Context, user string, estimate int64) (ratelimit.Reservation, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used+estimate > f.limit {
		return ratelimit.Reservation{}, false, nil
	}
	f.used += estimate
	f.reserves++
	return ratelimit.Reservation{UserID: user, At: time.Now(), Tokens: estimate}, true, nil
}

func (f *fakeBudget) Settle(_ context.Context, r ratelimit.Reservation, used int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used += used - r.Tokens
	f.settles++
	return nil
}

type noQuota struct{}

func (noQuota) Acquire(context.Context, string, int) (func(), error) { return func() {}, nil }

// fakeModel answers with reply and tokens of usage, or fails with the
// errors of errs first, one a call.
type fakeModel struct {
	mu     sync.Mutex
	calls  int
	errs   []error
	tokens int
	deltas []string
}

func (f *fakeModel) Name() string { return "fake" }

func (f *fakeModel) Complete(context.Context, llm.Request) (llm.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= len(f.errs) {
		return llm.Response{}, f.errs[f.calls-1]
	}
	return llm.Response{Content: "the answer", Model: "fake", PromptTokens: f.tokens / 2, CompletionTokens: f.tokens - f.tokens/2}, nil
}

func (f *fakeModel) Stream(ctx context.Context, req llm.Request, onDelta func(string)) (llm.Response, error) {
	resp, err := f.Complete(ctx, req)
	if err == nil {
		for _, d := range f.deltas {
			onDelta(d)
		}
	}
	return resp, err
}

func (f *fakeModel) called() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// rig is a service on fakes, with the handler wrapped in the real record
// retry (fast), as the worker wraps it.
type rig struct {
	s       *Service
	answers *fakeAnswers
	out     *fakeSink
	budget  *fakeBudget
	model   *fakeModel
	handle  kafka.Handler
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{answers: &fakeAnswers{}, out: &fakeSink{}, budget: &fakeBudget{limit: 1 << 40}, model: &fakeModel{tokens: 40}}
	cfg := Config{MemoryTurns: 10, MemoryChars: 12000, MaxConcurrency: 4, SystemPrompt: "be brief"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r.s = newService(cfg, log, newMetrics(prometheus.NewRegistry()),
		deps{answers: r.answers, out: r.out, budget: r.budget, quota: noQuota{}, model: r.model})
	r.handle = kafka.Retry(kafka.RetryPolicy{Initial: time.Millisecond, Max: 2 * time.Millisecond}, nil)(r.s.handle)
	return r
}

// message is the incoming record of user's message id.
func message(t *testing.T, user, id string) *kgo.Record {
	t.Helper()
	return mustRecord(t, &envelope.Envelope{
		Type: envelope.TypeMessage, ID: id, UserID: user, Content: "hello there", CorrelationID: "corr-" + id,
		Timestamp: time.Now().UTC(),
	})
}

// run handles rec with a deadline, as a lane would.
func (r *rig) run(t *testing.T, rec *kgo.Record) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.handle(ctx, rec)
}

func mustRecord(t *testing.T, e *envelope.Envelope) *kgo.Record {
	t.Helper()
	rec, err := kafka.EnvelopeRecord(kafka.TopicIncoming, e)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
