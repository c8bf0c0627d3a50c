package aiconsumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	openai "github.com/sashabaranov/go-openai"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/config"
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

// fakeSink records what would go to the responses topic, in order, and
// when.
type fakeSink struct {
	mu       sync.Mutex
	answers  []*envelope.Envelope
	chunks   []*envelope.Envelope
	statuses []*envelope.Envelope
	order    []string    // reply_to/type of everything produced
	at       []time.Time // when each answer was produced
}

func (f *fakeSink) Answer(_ context.Context, e *envelope.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers = append(f.answers, e)
	f.at = append(f.at, time.Now())
	f.order = append(f.order, e.ReplyTo+"/"+e.Type)
	return nil
}

func (f *fakeSink) Chunk(_ context.Context, e *envelope.Envelope) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.chunks = append(f.chunks, e)
}

func (f *fakeSink) Status(_ context.Context, e *envelope.Envelope) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses = append(f.statuses, e)
	f.order = append(f.order, e.ReplyTo+"/"+e.Type)
}

// produced is a copy of what went out: answers (with their times) and
// statuses.
func (f *fakeSink) produced() ([]*envelope.Envelope, []time.Time, []*envelope.Envelope) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.answers), slices.Clone(f.at), slices.Clone(f.statuses)
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

// fakeQuota is the shared model quota; the acquisitions listed in fail
// (counted from 1) fail as if Redis were away.
type fakeQuota struct {
	mu   sync.Mutex
	n    int
	fail map[int]bool
}

func (f *fakeQuota) Acquire(context.Context, string, int) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n++; f.fail[f.n] {
		return nil, errRedisDown
	}
	return func() {}, nil
}

// fakeModel is the model API behind the real retries and breaker: it
// answers with tokens of usage after latency, or fails with the errors of
// errs first, one a call, or with outage's error while one is set.
type fakeModel struct {
	mu      sync.Mutex
	calls   int
	errs    []error
	tokens  int
	deltas  []string
	latency time.Duration
	outage  atomic.Pointer[error]
}

func (f *fakeModel) Name() string { return "fake" }

func (f *fakeModel) Complete(context.Context, llm.Request) (llm.Response, error) {
	time.Sleep(f.latency)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= len(f.errs) {
		return llm.Response{}, f.errs[f.calls-1]
	}
	if err := f.outage.Load(); err != nil {
		return llm.Response{}, *err
	}
	return llm.Response{Content: "the answer", Model: "fake", PromptTokens: f.tokens / 2, CompletionTokens: f.tokens - f.tokens/2}, nil
}

// fail makes every call fail with err from now on; nil ends the outage.
func (f *fakeModel) fail(err error) {
	if err == nil {
		f.outage.Store(nil)
		return
	}
	f.outage.Store(&err)
}

// apiError is what the go-openai client returns for an HTTP status.
func apiError(status int) error {
	return fmt.Errorf("openai: %w", &openai.APIError{HTTPStatusCode: status, Message: http.StatusText(status)})
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

// rig is a service on the shipped configuration and fakes, with the
// fake model behind the real retries, budget and breaker (llm.Router over
// llm.Resilient, as New builds it) and the handler wrapped in the real
// record retry (fast), as the worker wraps it.
type rig struct {
	s       *Service
	answers *fakeAnswers
	out     *fakeSink
	budget  *fakeBudget
	quota   *fakeQuota
	model   *fakeModel
	handle  kafka.Handler
}

// newRig builds the rig; env overrides documented settings, each with its
// reason at the call.
func newRig(t *testing.T, env map[string]string) *rig {
	t.Helper()
	r := &rig{answers: &fakeAnswers{}, out: &fakeSink{}, budget: &fakeBudget{limit: 1 << 40}, quota: &fakeQuota{}, model: &fakeModel{tokens: 40}}
	vars := map[string]string{"LLM_OFFLINE": "true"} // no key to check
	maps.Copy(vars, env)
	var cfg Config
	if err := config.LoadFrom(&cfg, vars); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := newMetrics(prometheus.NewRegistry())
	r.s = newService(cfg, log, m,
		deps{answers: r.answers, out: r.out, budget: r.budget, quota: r.quota, model: routed(r.model, cfg.LLM, m)})
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

// run handles rec as a lane would, failing the test after a minute.
func (r *rig) run(t *testing.T, rec *kgo.Record) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
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
