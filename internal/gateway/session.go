package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/delivery"
	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/telemetry"
)

// conn is one client connection: its transport (socket), its session —
// frames in, limits, produce, ack — and its delivery stream (answers out,
// see output.go and internal/delivery).
type conn struct {
	socket
	g      *Gateway
	userID string
	connID string     // this socket's slot in the user's socket limit
	grant  auth.Grant // what the socket's token allows, re-checked on ticks
	stream *delivery.Stream
	// resumes bounds resume frames (WS_RESUMES_PER_MIN); made on the first
	// one, so a socket that never resumes holds none.
	resumes *rate.Limiter
	slot    socketSlot
	cleanup func()
}

func newConn(g *Gateway, userID, resume string, grant auth.Grant) *conn {
	c := &conn{g: g, userID: userID, grant: grant}
	c.socket = newSocket(&g.cfg, g.m, g.poller, c)
	c.stream = delivery.New(g.base, userID, resume, g.replays, c, &g.deliveryCfg)
	return c
}

// start runs the attached socket: the user's channel is already
// subscribed, so the first replay (on this goroutine) misses nothing
// published after it; then reading starts, on a goroutine of its own.
func (c *conn) start() {
	c.startPings()
	go func() {
		c.stream.Start()
		c.startReading()
	}()
}

// finished (socketOwner) releases what the socket held, once it is closed.
func (c *conn) finished(string) {
	c.stream.Close()
	c.cleanup()
	c.g.unregister(c)
}

// handleMessage (socketOwner) handles one client message.
func (c *conn) handleMessage(mt int, data []byte) {
	if mt != websocket.TextMessage {
		c.g.m.frames.WithLabelValues("in", "binary").Inc()
		c.refuseFrame(&protocol.FrameBinary, "", "")
		return
	}
	c.handleFrame(data)
}

// handleFrame validates one client frame and acts on it: a message is
// produced (the ack, or an error, is sent from the broker's callback); a
// resume replays what the client lacks.
func (c *conn) handleFrame(data []byte) {
	ctx, span := c.g.tracer.Start(c.g.base, "chat.receive", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("enduser.id", c.userID), attribute.String("chat.instance", c.g.instance)))
	f, err := protocol.DecodeClientFrame(data, c.userID, c.g.frameLimits())
	if err != nil {
		c.invalidFrame(span, f, err)
		return
	}
	c.g.m.frames.WithLabelValues("in", f.Type).Inc()
	corr := f.CorrelationID
	if f.Type == protocol.TypeMessage {
		corr = ids.CorrelationID(f.CorrelationID)
		ctx = telemetry.WithCorrelationID(ctx, corr)
		// The span gets the id with the message id in produce, in one call:
		// each attribute set after a span's start copies its attributes.
	}
	if r, arg := c.admitFrame(ctx, f); r != nil {
		telemetry.SetCorrelation(ctx, corr)
		span.SetStatus(codes.Error, r.Reason)
		span.End()
		c.refuseFrame(r, f.ID, corr, arg...)
		return
	}
	if f.Type == protocol.TypeResume {
		span.End()
		c.stream.Resume(f.Cursor)
		return
	}
	c.produce(ctx, span, f, corr)
}

func (c *conn) invalidFrame(span trace.Span, f protocol.ClientFrame, err error) {
	msg, reason := "invalid frame", protocol.FrameInvalid.Reason
	var pe *protocol.Error
	if errors.As(err, &pe) {
		msg, reason = pe.Message, string(pe.Reason)
	}
	c.g.m.frames.WithLabelValues("in", protocol.FrameInvalid.Reason).Inc()
	c.g.m.rejected.WithLabelValues(reason).Inc()
	span.SetStatus(codes.Error, reason)
	span.End()
	c.enqueue(c.errorFrame(msg, f.ID, ""), true)
}

// admitFrame applies what refuses a valid frame: shutdown, then the limits
// of its type. A refusal comes with the arguments of its message.
func (c *conn) admitFrame(ctx context.Context, f protocol.ClientFrame) (*protocol.Refusal, []any) {
	if c.draining() {
		return &protocol.FrameDraining, nil
	}
	if f.Type == protocol.TypeResume {
		return c.admitResume()
	}
	return c.g.overLimit(ctx, c.userID)
}

// admitResume bounds resume frames per socket: each one reads the history
// (up to the whole of it), for a frame of some sixty bytes.
func (c *conn) admitResume() (*protocol.Refusal, []any) {
	if c.g.cfg.ResumesPerMin == 0 {
		return nil, nil
	}
	if c.resumes == nil {
		c.resumes = rate.NewLimiter(rate.Limit(float64(c.g.cfg.ResumesPerMin)/60), c.g.cfg.ResumesBurst)
	}
	r := c.resumes.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		c.g.m.limited.WithLabelValues(limitResumes).Inc()
		return &protocol.FrameResumeLimit, []any{retryAfter(d)}
	}
	return nil, nil
}

func (c *conn) draining() bool {
	select {
	case <-c.g.drainingCh:
		return true
	default:
		return false
	}
}

// produce sends an accepted message to the broker; the ack (or the error
// frame) goes out from the broker's callback.
func (c *conn) produce(ctx context.Context, span trace.Span, f protocol.ClientFrame, corr string) {
	env := &envelope.Envelope{
		Type: envelope.TypeMessage, ID: ids.New(), UserID: c.userID, Content: f.Content,
		ClientID: f.ID, CorrelationID: corr, Timestamp: time.Now().UTC(), Stream: f.Stream,
	}
	span.SetAttributes(telemetry.CorrelationAttr.String(corr), attribute.String("messaging.message.id", env.ID))
	rec, err := kafka.EnvelopeRecord(kafka.TopicIncoming, env)
	if err != nil {
		span.End()
		c.refuseFrame(&protocol.FrameNotQueued, f.ID, corr)
		return
	}
	rec.Context = ctx
	start := time.Now()
	c.g.producer.Produce(c.g.base, rec, func(_ *kgo.Record, err error) {
		defer span.End()
		if err != nil {
			c.g.m.produce.WithLabelValues("error").Observe(time.Since(start).Seconds())
			span.RecordError(err)
			span.SetStatus(codes.Error, "produce failed")
			c.g.log.ErrorContext(ctx, "message not queued", "message_id", env.ID, "error", err)
			c.refuseFrame(&protocol.FrameNotQueued, f.ID, corr)
			return
		}
		c.g.m.produce.WithLabelValues("ok").Observe(time.Since(start).Seconds())
		c.g.m.accepted.Inc()
		c.g.log.DebugContext(ctx, "message accepted", "message_id", env.ID)
		c.enqueue(outFrame{typ: protocol.TypeAck, data: protocol.Encode(protocol.ServerFrame{
			Type: protocol.TypeAck, ID: env.ID, ClientID: f.ID, CorrelationID: corr,
			UserID: c.userID, Timestamp: protocol.FormatTime(env.Timestamp),
		})}, true)
	})
}

// tick (socketOwner) runs on each ping: it closes a socket whose token
// expired or whose key was removed, and keeps the socket's slot in the
// user's socket limit alive (slots of a crashed instance expire).
func (c *conn) tick() bool {
	if r := c.tokenRefusal(); r != nil {
		c.terminate(r)
		return false
	}
	ok, err := c.slot.refresh(c.g.base, c.g.lim.Sockets, c.userID, c.connID)
	if err != nil {
		c.g.m.limitErrors.WithLabelValues(limitUserSockets).Inc()
		return true
	}
	if !ok {
		c.g.m.limited.WithLabelValues(limitUserSockets).Inc()
		c.terminate(&protocol.SocketLimit)
		return false
	}
	return true
}

// nextTick (socketOwner) makes the tick after the token's deadline come at
// that deadline, not up to a ping interval later.
func (c *conn) nextTick() time.Duration {
	if c.grant.Expires.IsZero() {
		return 0
	}
	return max(time.Until(c.g.verifier.Deadline(c.grant)), time.Millisecond)
}

// tokenRefusal says why the socket's token no longer holds, or nil.
func (c *conn) tokenRefusal() *protocol.Refusal {
	if c.grant.Expires.IsZero() {
		return nil // opened without a token check (tests)
	}
	var ae *auth.Error
	if err := c.g.verifier.Valid(c.grant); errors.As(err, &ae) {
		if ae.Reason == auth.ReasonExpired {
			return &protocol.TokenExpired
		}
		return &protocol.TokenRevoked
	}
	return nil
}

// socketSlot is a socket's slot in the user's socket limit. Invariant:
// once released, it is never refreshed (a refresh re-adds an expired slot,
// so a refresh racing the release would hold the slot for its TTL).
type socketSlot struct {
	mu       sync.Mutex
	released bool
}

// refresh extends the slot, unless it was released.
func (s *socketSlot) refresh(ctx context.Context, lim SocketSlots, user, connID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return true, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lim.Refresh(rctx, user, connID)
}

// release gives the slot back; a refresh in progress finishes first.
func (s *socketSlot) release(ctx context.Context, lim SocketSlots, user, connID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = true
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return lim.Release(rctx, user, connID)
}

func (c *conn) errorFrame(msg, clientID, corr string) outFrame {
	f := protocol.ErrorFrame(c.userID, msg)
	f.ClientID, f.CorrelationID = clientID, corr
	return outFrame{typ: protocol.TypeError, data: protocol.Encode(f)}
}
