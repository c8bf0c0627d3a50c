package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/kafka"
)

// fakeStore keeps a history in memory with the real store's contract: an
// answer is appended once per response id and keeps its first cursor, and
// the payload is published with the cursor in place of the placeholder.
type fakeStore struct {
	mu        sync.Mutex
	cursors   map[string]string // response id → cursor
	history   []*envelope.Envelope
	published []published
	fail      error
}

type published struct {
	channel string
	payload []byte
	chunk   *envelope.Envelope
}

func (f *fakeStore) AppendPublish(_ context.Context, answer *envelope.Envelope, channel string, payload []byte, placeholder string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return "", f.fail
	}
	if placeholder == "" || bytes.Count(payload, []byte(placeholder)) != 1 {
		return "", errors.New("the payload must hold the placeholder once")
	}
	cursor, ok := f.cursors[answer.ID]
	if !ok {
		cursor = fmt.Sprintf("%d-0", len(f.history)+1)
		f.cursors[answer.ID] = cursor
		f.history = append(f.history, answer)
	}
	f.published = append(f.published, published{channel: channel, payload: bytes.Replace(payload, []byte(placeholder), []byte(cursor), 1)})
	return cursor, nil
}

func (f *fakeStore) Publish(_ context.Context, e *envelope.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.published = append(f.published, published{chunk: e})
	return nil
}

func newTestRelay(t *testing.T) (*Relay, *fakeStore) {
	t.Helper()
	st := &fakeStore{cursors: map[string]string{}}
	return newRelay(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), st), st
}

func record(t *testing.T, e *envelope.Envelope) *kgo.Record {
	t.Helper()
	rec, err := kafka.EnvelopeRecord(kafka.TopicResponses, e)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func response(typ, id string) *envelope.Envelope {
	return &envelope.Envelope{
		Type: typ, ID: id, ReplyTo: "m-" + id, UserID: "u1", Content: "answer " + id, Question: "question " + id,
		CorrelationID: "c1", Timestamp: time.Now().UTC(), AcceptedAt: time.Now().UTC(),
	}
}

func TestChunksArePublishedAndAnswersStoredThenPublished(t *testing.T) {
	r, st := newTestRelay(t)
	chunk := &envelope.Envelope{Type: envelope.TypeChunk, ID: "r1", ReplyTo: "m-r1", UserID: "u1", Content: "ans", CorrelationID: "c1", Seq: 1, Timestamp: time.Now().UTC()}
	for _, e := range []*envelope.Envelope{chunk, response(envelope.TypeResponse, "r1"), response(envelope.TypeError, "r2")} {
		if err := r.handle(t.Context(), record(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	if len(st.history) != 2 || st.history[0].ID != "r1" || st.history[1].ID != "r2" {
		t.Fatalf("history %+v: want the response and the error, not the chunk", st.history)
	}
	if len(st.published) != 3 || st.published[0].chunk == nil || st.published[0].chunk.Seq != 1 {
		t.Fatalf("published %+v: want the chunk first, as it came", st.published)
	}
	for i, p := range st.published[1:] {
		got, err := envelope.Unmarshal(p.payload)
		if err != nil {
			t.Fatal(err)
		}
		if p.channel != "chat:{u1}:live" || got.Cursor != fmt.Sprintf("%d-0", i+1) || got.Question != "" {
			t.Fatalf("published on %q: %+v; want the user's channel, the cursor of the append, no question", p.channel, got)
		}
	}
}

// Status news (an answer is late) is published, never stored.
func TestStatusIsPublishedNotStored(t *testing.T) {
	r, st := newTestRelay(t)
	status := &envelope.Envelope{Type: envelope.TypeStatus, State: envelope.StateDelayed, ID: "s1", ReplyTo: "m1", UserID: "u1",
		Content: "on its way", CorrelationID: "c1", Timestamp: time.Now().UTC()}
	if err := r.handle(t.Context(), record(t, status)); err != nil {
		t.Fatal(err)
	}
	if len(st.history) != 0 || len(st.published) != 1 || st.published[0].chunk == nil || st.published[0].chunk.State != envelope.StateDelayed {
		t.Fatalf("history %+v, published %+v: want the status published only", st.history, st.published)
	}
}

// A redelivered answer is not appended again and is published with the
// cursor of its first append, which clients de-duplicate on.
func TestRedeliveredAnswerKeepsItsCursor(t *testing.T) {
	r, st := newTestRelay(t)
	rec := record(t, response(envelope.TypeResponse, "r1"))
	for range 2 {
		if err := r.handle(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if len(st.history) != 1 || len(st.published) != 2 {
		t.Fatalf("%d appended, %d published; want 1 and 2", len(st.history), len(st.published))
	}
	first, _ := envelope.Unmarshal(st.published[0].payload)
	again, _ := envelope.Unmarshal(st.published[1].payload)
	if first.Cursor == "" || first.Cursor != again.Cursor || first.ID != again.ID {
		t.Fatalf("first %s@%s, again %s@%s: want one id at one cursor", first.ID, first.Cursor, again.ID, again.Cursor)
	}
}

func TestRedisFailureIsReturnedForRetry(t *testing.T) {
	r, st := newTestRelay(t)
	st.fail = errors.New("redis: LOADING")
	chunk := response(envelope.TypeChunk, "r1")
	chunk.Seq, chunk.Question = 1, ""
	for _, e := range []*envelope.Envelope{response(envelope.TypeResponse, "r1"), chunk} {
		err := r.handle(t.Context(), record(t, e))
		if err == nil || kafka.IsPermanent(err) || !errors.Is(err, st.fail) {
			t.Fatalf("%s: err %v, want the Redis error, not permanent", e.Type, err)
		}
	}
	if n := testutil.ToFloat64(r.publishErrors); n != 2 {
		t.Fatalf("publish errors counted %v, want 2", n)
	}
	st.fail = nil
	if err := r.handle(t.Context(), record(t, response(envelope.TypeResponse, "r1"))); err != nil || len(st.history) != 1 {
		t.Fatalf("after Redis is back: %v, %d appended", err, len(st.history))
	}
}

func TestUndecodableRecordIsPermanent(t *testing.T) {
	r, st := newTestRelay(t)
	garbage := record(t, response(envelope.TypeResponse, "r1"))
	garbage.Value = []byte(`{"type":"response",`)
	message := record(t, &envelope.Envelope{Type: envelope.TypeMessage, ID: "m1", UserID: "u1", Content: "hi", CorrelationID: "c1", Timestamp: time.Now().UTC()})
	for _, rec := range []*kgo.Record{garbage, message} {
		if err := r.handle(t.Context(), rec); !kafka.IsPermanent(err) {
			t.Fatalf("%s: err %v, want permanent (dead-lettered)", rec.Value, err)
		}
	}
	if len(st.published) != 0 {
		t.Fatalf("published %+v", st.published)
	}
}
