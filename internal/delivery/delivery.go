// Package delivery owns one connection's view of its user's answers: the
// connection's position in the user's history, the replays that fill gaps
// (on connect, after a Redis resubscription, on the client's resume frame),
// the order of replayed against live answers, and de-duplication.
//
// Answers reach a connection from two sources — history replay and live
// pub/sub — and each must arrive once, in history order, with no gap:
//
//   - The connection has its own position (pos): initialised from the
//     client's resume cursor, or, without one, from what its first replay
//     read (the user's delivered marker). A user-wide marker is never a
//     resync's starting point: any socket of the user moves it.
//   - While a replay runs, live answers wait; afterwards they go out unless
//     the replay already sent them (cursor ≤ pos).
//   - A replay that cannot read the history is retried; when it keeps
//     failing the connection is closed (Output.Gap) so the client resumes
//     from its cursor. Live answers never move pos over a gap.
//
// The socket side (frames, queue, close codes) is the Output's business;
// this package is pure logic with fast unit tests (delivery_test.go).
package delivery

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
)

// History is a user's answer history, as a connection reads it.
type History interface {
	// After reads the page of answers after position (exclusive).
	After(ctx context.Context, user, position string, limit int64) (history.Page, error)
	// FromDelivered reads the first page of a connection without a
	// cursor; its From is where the connection starts.
	FromDelivered(ctx context.Context, user string, limit int64) (history.Page, error)
}

// Output is the connection's socket as delivery sees it. Its methods are
// called with the stream's lock held, in the order the client must see
// them: they must not block and must not call back into the Stream.
type Output interface {
	// Ready tells the client the position its connection starts from,
	// before any answer; a client that keeps it can always resume.
	Ready(position string)
	// Answer queues an answer (a response, error or chunk); replayed says
	// it comes from the history rather than live.
	Answer(e *envelope.Envelope, replayed bool)
	// Gap closes the connection: answers may be missing after the
	// position and could not be read. The client reconnects and resumes.
	Gap(err error)
}

// Config bounds a stream's work.
type Config struct {
	// PageSize is how many history entries one read takes.
	PageSize int64
	// ReadTimeout bounds one history read.
	ReadTimeout time.Duration
	// RetryFor is how long a failing replay is retried before the
	// connection is closed; RetryInitial is the first backoff.
	RetryFor     time.Duration
	RetryInitial time.Duration
	// MaxPending bounds the live answers held while a replay runs; more
	// close the connection as a gap (the client resumes).
	MaxPending int
	// OnDuplicate and OnRetry observe (metrics, logs); either may be nil.
	OnDuplicate func()
	OnRetry     func(err error)
}

// DefaultConfig is what the gateway runs with: a replay survives a Redis
// restart's few seconds of LOADING, and a page covers a whole default
// history (HISTORY_MAX_LEN 200).
func DefaultConfig() Config {
	return Config{PageSize: 1000, ReadTimeout: 5 * time.Second, RetryFor: 15 * time.Second, RetryInitial: 100 * time.Millisecond, MaxPending: 1024}
}

// ErrTooManyPending is the gap reported when live answers piled up behind
// a replay that could not finish.
var ErrTooManyPending = errors.New("delivery: too many live answers waiting for a replay")

// Stream is one connection's delivery state.
type Stream struct {
	user string
	hist History
	out  Output
	cfg  *Config // shared by every stream of the instance
	base context.Context

	// mu guards everything below. Invariants:
	//   - pos is the cursor of the last answer handed to out, or the
	//     position the connection started from; every answer after pos
	//     has not been handed to out, and none is skipped: pos only moves
	//     to the cursor of an answer handed to out, or to a position the
	//     client named (resume frames), or to the start read by the first
	//     replay.
	//   - started: the first replay has fixed pos and called out.Ready.
	//   - replaying: one replay goroutine runs; live answers wait in
	//     pending, in arrival order. again: a resync came while it ran, so
	//     it reads once more from pos before letting live answers through
	//     (its earlier read may predate the gap).
	//   - closed: nothing more reaches out.
	//   - cancel ends the running replay's reads and backoff (set while
	//     one runs): a closed connection stops replaying at once. Made per
	//     replay, not per connection, so an idle socket holds no context.
	mu        sync.Mutex
	cancel    context.CancelFunc
	pos       string
	explicit  bool // pos came from the client's cursor
	begun     bool // Start ran: before it (the handshake), live answers only wait
	started   bool
	replaying bool
	again     bool
	closed    bool
	pending   []*envelope.Envelope
	// sent holds the response ids of the last answers handed to out,
	// oldest first, at most recentIDs; nil until the first, so an idle
	// socket holds none. Cursors order a history, but a Redis Cluster
	// failover can lose an answer's append after this connection read it
	// (inside the relay's wait for a replica), and the relay's retry then
	// appends the same answer under a newer cursor: the id catches it.
	sent []string
}

// recentIDs is how many response ids a stream remembers. A re-appended
// answer comes back within the relay's retries of one record, while at
// most a few newer answers of the user went out.
const recentIDs = 16

// New prepares the stream of a connection of user; resume is the client's
// cursor (empty: none). Live answers wait until Start's replay is done.
func New(ctx context.Context, user, resume string, hist History, out Output, cfg *Config) *Stream {
	return &Stream{
		user: user, hist: hist, out: out, cfg: cfg, base: ctx,
		pos: resume, explicit: resume != "", replaying: true,
	}
}

// Start runs the first replay on the caller's goroutine: call it once the
// user's channel is subscribed, so nothing published after the read is
// missed.
func (s *Stream) Start() {
	s.mu.Lock()
	s.begun = true
	s.mu.Unlock()
	s.replay()
}

// Position is the connection's current position.
func (s *Stream) Position() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos
}

// Deliver takes a live answer (redisbus.Sink). It never blocks.
func (s *Stream) Deliver(e *envelope.Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
	case s.replaying && s.begun && len(s.pending) >= s.cfg.MaxPending:
		s.gapLocked(ErrTooManyPending)
	case s.replaying:
		s.pending = append(s.pending, e)
	default:
		s.sendLocked(e, false)
	}
}

// Resync replays from the connection's position: the live channel may have
// missed answers (redisbus.Sink; called on the hub's receive loop, so it
// only sets state and starts a goroutine).
func (s *Stream) Resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.replaying {
		s.again = true
		return
	}
	s.replaying = true
	go s.replay()
}

// Resume handles the client's resume frame: it has every answer up to c, so
// nothing up to c is sent again, and anything after the connection's
// position that it lacks is read from the history. A connection never
// sends one answer twice, so a c before the position sends nothing again.
func (s *Stream) Resume(c string) {
	s.mu.Lock()
	if s.started || s.explicit {
		s.pos = cursor.Max(s.pos, c)
	} else {
		// Before the first read the start is unknown: remember the floor.
		s.pos, s.explicit = c, true
	}
	s.mu.Unlock()
	s.Resync()
}

// Close stops the stream: the connection is gone.
func (s *Stream) Close() {
	s.mu.Lock()
	s.closed, s.pending = true, nil
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// replay reads from pos until a read finds no resync asked meanwhile, then
// lets the waiting live answers through.
func (s *Stream) replay() {
	ctx, cancel := context.WithCancel(s.base)
	defer cancel()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.cancel = cancel
	s.mu.Unlock()
	for {
		s.mu.Lock()
		from, fromMarker := s.pos, !s.started && !s.explicit
		s.again = false
		s.mu.Unlock()
		if !s.catchUp(ctx, from, fromMarker) {
			return
		}
		s.mu.Lock()
		if s.again && !s.closed {
			s.mu.Unlock()
			continue
		}
		for _, e := range s.pending {
			s.sendLocked(e, false)
		}
		s.pending, s.replaying, s.cancel = nil, false, nil
		s.mu.Unlock()
		return
	}
}

// catchUp sends every answer after from, page by page; false means the
// stream closed (a gap was reported, or the connection ended).
func (s *Stream) catchUp(ctx context.Context, from string, fromMarker bool) bool {
	for {
		page, err := s.read(ctx, from, fromMarker)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		if err != nil {
			s.gapLocked(err)
			s.mu.Unlock()
			return false
		}
		if !s.started {
			s.started = true
			s.pos = cursor.Max(s.pos, page.From)
			s.out.Ready(s.pos)
		}
		for _, e := range page.Answers {
			s.sendLocked(e, true)
		}
		s.mu.Unlock()
		if !page.Full {
			return true
		}
		from, fromMarker = page.Last, false
	}
}

// read reads one page, retrying with backoff for cfg.RetryFor.
func (s *Stream) read(ctx context.Context, from string, fromMarker bool) (history.Page, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = s.cfg.RetryInitial, 2*time.Second
	op := func() (history.Page, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
		defer cancel()
		if fromMarker {
			return s.hist.FromDelivered(ctx, s.user, s.cfg.PageSize)
		}
		return s.hist.After(ctx, s.user, from, s.cfg.PageSize)
	}
	notify := func(err error, _ time.Duration) {
		if s.cfg.OnRetry != nil {
			s.cfg.OnRetry(err)
		}
	}
	return backoff.Retry(ctx, op, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(s.cfg.RetryFor), backoff.WithNotify(notify))
}

// sendLocked hands e to out unless the connection already had it.
func (s *Stream) sendLocked(e *envelope.Envelope, replayed bool) {
	if e.Cursor != "" {
		// Chunks (live previews) have no cursor and always pass.
		if !cursor.After(e.Cursor, s.pos) {
			s.duplicate()
			return
		}
		s.pos = e.Cursor
		if slices.Contains(s.sent, e.ID) {
			s.duplicate() // re-appended under a new cursor: pos moves past it
			return
		}
		if len(s.sent) == recentIDs {
			s.sent = append(s.sent[:0], s.sent[1:]...)
		}
		s.sent = append(s.sent, e.ID)
	}
	s.out.Answer(e, replayed)
}

func (s *Stream) duplicate() {
	if s.cfg.OnDuplicate != nil {
		s.cfg.OnDuplicate()
	}
}

func (s *Stream) gapLocked(err error) {
	s.closed, s.pending = true, nil
	if s.cancel != nil {
		s.cancel()
	}
	s.out.Gap(err)
}
