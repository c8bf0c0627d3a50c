package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
)

// fakeHistory is one user's history in memory: entries in cursor order
// (questions and answers), the user-wide delivered marker, and a hook that
// runs before each read (to fail it, or to hold it while the test plays an
// interleaving).
type fakeHistory struct {
	mu      sync.Mutex
	entries []*envelope.Envelope
	marker  string
	seq     int
	reads   []string // "after <pos>" / "marker", in order
	before  func() error
}

// add appends an answer (and the question before it) and returns the
// answer, with its cursor, as the relay would publish it.
func (h *fakeHistory) add(id string) *envelope.Envelope {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	h.entries = append(h.entries, &envelope.Envelope{Type: envelope.TypeMessage, ID: "q-" + id, Cursor: fmt.Sprintf("%d-0", h.seq)})
	h.seq++
	e := &envelope.Envelope{Type: envelope.TypeResponse, ID: id, Cursor: fmt.Sprintf("%d-0", h.seq)}
	h.entries = append(h.entries, e)
	c := *e
	return &c
}

func (h *fakeHistory) setMarker(c string) { h.mu.Lock(); h.marker = c; h.mu.Unlock() }

func (h *fakeHistory) setBefore(f func() error) { h.mu.Lock(); h.before = f; h.mu.Unlock() }

func (h *fakeHistory) page(from string, limit int64) history.Page {
	p := history.Page{From: from, Last: from}
	n := int64(0)
	for _, e := range h.entries {
		if !cursor.After(e.Cursor, from) {
			continue
		}
		if n == limit {
			p.Full = true
			break
		}
		n++
		p.Last = e.Cursor
		if e.Type != envelope.TypeMessage {
			c := *e
			p.Answers = append(p.Answers, &c)
		}
	}
	p.Full = p.Full || n == limit
	return p
}

func (h *fakeHistory) hook() error {
	h.mu.Lock()
	f := h.before
	h.mu.Unlock()
	if f != nil {
		return f()
	}
	return nil
}

func (h *fakeHistory) After(ctx context.Context, _, position string, limit int64) (history.Page, error) {
	if err := h.hook(); err != nil {
		return history.Page{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, "after "+position)
	return h.page(position, limit), ctx.Err()
}

func (h *fakeHistory) FromDelivered(ctx context.Context, _ string, limit int64) (history.Page, error) {
	if err := h.hook(); err != nil {
		return history.Page{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, "marker")
	from := h.marker
	if from == "" {
		from = cursor.Start
	}
	return h.page(from, limit), ctx.Err()
}

// fakeOutput records what the client would see.
type fakeOutput struct {
	mu     sync.Mutex
	events []string // "ready <pos>", "<id>" (live), "<id>*" (replayed), "gap"
	gapErr error
	change chan struct{}
}

func newFakeOutput() *fakeOutput { return &fakeOutput{change: make(chan struct{}, 1000)} }

func (o *fakeOutput) add(ev string) {
	o.mu.Lock()
	o.events = append(o.events, ev)
	o.mu.Unlock()
	o.change <- struct{}{}
}

func (o *fakeOutput) Ready(p string) { o.add("ready " + p) }
func (o *fakeOutput) Answer(e *envelope.Envelope, replayed bool) {
	if replayed {
		o.add(e.ID + "*")
		return
	}
	o.add(e.ID)
}
func (o *fakeOutput) Gap(err error) { o.mu.Lock(); o.gapErr = err; o.mu.Unlock(); o.add("gap") }

func (o *fakeOutput) got() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.events)
}

// waitFor waits until the client saw exactly want (failing on anything
// else, or on anything more within a short while).
func (o *fakeOutput) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for len(o.got()) < len(want) {
		select {
		case <-o.change:
		case <-deadline:
			t.Fatalf("client saw %v, want %v", o.got(), want)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if got := o.got(); !slices.Equal(got, want) {
		t.Fatalf("client saw %v, want %v", got, want)
	}
}

func testConfig() *Config {
	c := DefaultConfig()
	c.RetryInitial, c.RetryFor = time.Millisecond, 200*time.Millisecond
	return &c
}

func started(t *testing.T, h *fakeHistory, resume string, cfg *Config) (*Stream, *fakeOutput) {
	t.Helper()
	out := newFakeOutput()
	s := New(context.Background(), "u1", resume, h, out, cfg)
	t.Cleanup(s.Close)
	s.Start()
	return s, out
}

func TestConnectWithoutCursorStartsAtTheMarkerAndOwnsItsPosition(t *testing.T) {
	h := &fakeHistory{}
	h.add("A1")
	a2 := h.add("A2")
	h.setMarker(a2.Cursor) // another socket of the user delivered up to A2
	a3 := h.add("A3")
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+a2.Cursor, "A3*")
	s.Deliver(h.add("A4"))
	out.waitFor(t, "ready "+a2.Cursor, "A3*", "A4")
	if s.Position() == a3.Cursor {
		t.Fatal("position did not follow the live answer")
	}
}

// Issue 11, defect 2a: the user's socket on another instance delivers A1
// and moves the user-wide marker while this socket's subscription is down;
// its resync must read from its own position, not the marker, or A1 is
// lost for it.
func TestResyncReadsFromTheConnectionsPositionNotTheMarker(t *testing.T) {
	h := &fakeHistory{}
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+cursor.Start)
	a1 := h.add("A1") // published while this socket's subscription was down
	h.setMarker(a1.Cursor)
	s.Resync()
	out.waitFor(t, "ready "+cursor.Start, "A1*")
}

// Issue 11, defect 2b: a client resumed with A2 while the marker lagged
// (the delivering gateway died inside its flush window); a resync must not
// send A1 and A2 again.
func TestResyncAfterResumeDoesNotRepeatFromALaggingMarker(t *testing.T) {
	h := &fakeHistory{}
	h.add("A1")
	a2 := h.add("A2")
	s, out := started(t, h, a2.Cursor, testConfig())
	out.waitFor(t, "ready "+a2.Cursor)
	s.Resync()
	out.waitFor(t, "ready "+a2.Cursor)
	if s.Position() != a2.Cursor {
		t.Fatalf("position %s, want %s", s.Position(), a2.Cursor)
	}
}

// Issue 11, defect 3: a failed replay must not let live answers move the
// position over what it could not read. Reads fail for a while, live
// answers arrive meanwhile; once a read succeeds the missing answers come
// first, then the live ones, none skipped, none twice.
func TestFailedReplayIsRetriedAndLiveAnswersWait(t *testing.T) {
	h := &fakeHistory{}
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+cursor.Start)
	h.add("A1") // missed live
	var fails int
	h.setBefore(func() error {
		if fails == 0 {
			s.Deliver(h.add("A2")) // live, while the replay retries
		}
		if fails < 3 {
			fails++
			return errors.New("LOADING Redis is loading the dataset in memory")
		}
		return nil
	})
	s.Resync()
	out.waitFor(t, "ready "+cursor.Start, "A1*", "A2*")
	s.Deliver(h.add("A3"))
	out.waitFor(t, "ready "+cursor.Start, "A1*", "A2*", "A3")
}

// A replay that keeps failing closes the connection (the client resumes
// from its cursor) and hands out no live answer past the gap.
func TestReplayThatKeepsFailingClosesTheConnection(t *testing.T) {
	h := &fakeHistory{}
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+cursor.Start)
	h.add("A1")
	h.setBefore(func() error { return errors.New("pool timeout") })
	s.Resync()
	s.Deliver(h.add("A2"))
	out.waitFor(t, "ready "+cursor.Start, "gap")
	s.Deliver(h.add("A3"))
	out.waitFor(t, "ready "+cursor.Start, "gap")
	if out.gapErr == nil || !strings.Contains(out.gapErr.Error(), "pool timeout") {
		t.Fatalf("gap error %v", out.gapErr)
	}
}

// A resync that arrives while a replay is reading: that read may predate
// the gap, so another read follows before live answers go out.
func TestResyncDuringAReplayReadsAgain(t *testing.T) {
	h := &fakeHistory{}
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+cursor.Start)
	inRead, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.setBefore(func() error {
		once.Do(func() { close(inRead); <-release })
		return nil
	})
	s.Resync()
	<-inRead // the first replay's read is under way (it will see nothing)
	h.setBefore(nil)
	s.Resync() // a second resubscription: A1 was missed after that read
	h.add("A1")
	close(release)
	out.waitFor(t, "ready "+cursor.Start, "A1*")
}

func TestLiveAnswersDuringTheFirstReplayAreNotSentTwice(t *testing.T) {
	h := &fakeHistory{}
	a1 := h.add("A1")
	out := newFakeOutput()
	s := New(context.Background(), "u1", "", h, out, testConfig())
	defer s.Close()
	s.Deliver(a1) // published after the subscription, before the read
	a2 := h.add("A2")
	s.Deliver(a2)
	s.Start()
	out.waitFor(t, "ready "+cursor.Start, "A1*", "A2*")
}

func TestReplayReadsEveryPage(t *testing.T) {
	h := &fakeHistory{}
	var want []string
	for i := range 7 {
		h.add(fmt.Sprintf("A%d", i))
		want = append(want, fmt.Sprintf("A%d*", i))
	}
	cfg := testConfig()
	cfg.PageSize = 3 // entries, questions included
	_, out := started(t, h, "", cfg)
	out.waitFor(t, append([]string{"ready " + cursor.Start}, want...)...)
}

func TestTooManyLiveAnswersBehindAReplayIsAGap(t *testing.T) {
	h := &fakeHistory{}
	inRead, hold := make(chan struct{}), make(chan struct{})
	h.setBefore(func() error { close(inRead); <-hold; return nil })
	cfg := testConfig()
	cfg.MaxPending = 2
	out := newFakeOutput()
	s := New(context.Background(), "u1", "", h, out, cfg)
	defer s.Close()
	s.Deliver(h.add("early")) // during the handshake: waits, never a gap
	go s.Start()
	<-inRead
	for i := range 3 {
		s.Deliver(h.add(fmt.Sprintf("A%d", i)))
	}
	out.waitFor(t, "gap")
	close(hold)
	if !errors.Is(out.gapErr, ErrTooManyPending) {
		t.Fatalf("gap error %v", out.gapErr)
	}
}

func TestResumeFrames(t *testing.T) {
	h := &fakeHistory{}
	a1 := h.add("A1")
	h.add("A2")
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+cursor.Start, "A1*", "A2*")
	h.add("A3") // missed live: the resume's read finds them
	h.add("A4")
	s.Resume(a1.Cursor) // older than the position: nothing is sent again
	out.waitFor(t, "ready "+cursor.Start, "A1*", "A2*", "A3*", "A4*")
	h.add("A5")
	a6 := h.add("A6")
	s.Resume(a6.Cursor) // the client has everything up to A6 already
	// A live answer the resume's read cannot see (whenever it runs): it
	// goes out once, after the read, as live.
	s.Deliver(&envelope.Envelope{Type: envelope.TypeResponse, ID: "A7", Cursor: "1000-0"})
	out.waitFor(t, "ready "+cursor.Start, "A1*", "A2*", "A3*", "A4*", "A7")
}

// A resume frame that arrives before the first read: the connection starts
// from the client's cursor and sends nothing up to it.
func TestResumeBeforeTheFirstRead(t *testing.T) {
	h := &fakeHistory{}
	h.add("A1")
	a2 := h.add("A2")
	h.add("A3")
	out := newFakeOutput()
	s := New(context.Background(), "u1", "", h, out, testConfig())
	defer s.Close()
	s.Resume(a2.Cursor)
	s.Start()
	out.waitFor(t, "ready "+a2.Cursor, "A3*")
}

// A Redis Cluster failover can lose an append its connection had already
// replayed (the master died before its replica had it, within the relay's
// wait for the replica); the relay's retry appends the same answer again,
// under a newer cursor. The connection must not send it twice: it knows
// the response id. Its position still moves past the new cursor.
func TestAnAnswerReappendedUnderANewCursorIsNotSentTwice(t *testing.T) {
	h := &fakeHistory{}
	s, out := started(t, h, "", testConfig())
	out.waitFor(t, "ready "+cursor.Start)
	a1 := h.add("A1")
	s.Deliver(a1)
	out.waitFor(t, "ready "+cursor.Start, "A1")
	again := h.add("A1") // the same response id, appended again after the failover
	s.Deliver(again)
	s.Deliver(h.add("A2"))
	out.waitFor(t, "ready "+cursor.Start, "A1", "A2")
	if !cursor.After(s.Position(), again.Cursor) {
		t.Fatalf("position %s did not move past the re-appended answer's %s", s.Position(), again.Cursor)
	}
}
