package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/telemetry"
)

// conn is one client socket. The handler goroutine reads; one writer
// goroutine owns every write and the final close, so frames from produce
// callbacks and Redis deliveries never interleave on the wire.
type conn struct {
	g      *Gateway
	userID string
	connID string // this socket's slot in the user's socket limit
	ws     *websocket.Conn

	send       chan outFrame
	done       chan struct{} // closed by terminate: the socket is finishing
	writerDone chan struct{}
	draining   atomic.Bool

	closeOnce   sync.Once
	closeCode   int
	closeText   string
	closeReason string

	// Answers reach a socket from two sources — history replay and live
	// pub/sub — and must arrive once each, in order. While replaying, live
	// answers wait in pending; lastCursor drops anything already sent.
	amu        sync.Mutex
	replaying  bool
	pending    []*envelope.Envelope
	lastCursor string
}

// outFrame is one queued frame; a frame with closeCode set is an order to
// close once everything queued before it is written.
type outFrame struct {
	data       []byte
	typ        string
	span       trace.Span
	acceptedAt time.Time
	cursor     string

	closeCode   int
	closeText   string
	closeReason string
}

func newConn(g *Gateway, userID string) *conn {
	return &conn{
		g: g, userID: userID,
		send:       make(chan outFrame, g.cfg.SendQueue),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		replaying:  true, // live answers wait until the first replay is done
	}
}

// serve runs the socket until it closes, then unsubscribes and unregisters.
// The user's channel is already subscribed: answers published from now on
// are buffered while the history after the client's cursor (or after what
// was last delivered to the user) is replayed, so the hand-over has neither
// gap nor duplicate.
func (c *conn) serve(ws *websocket.Conn, unsubscribe func(), resume string) {
	c.ws = ws
	ws.SetReadLimit(c.g.cfg.ReadLimit)
	_ = ws.SetReadDeadline(time.Now().Add(c.g.cfg.PongTimeout))
	ws.SetPongHandler(func(string) error {
		return ws.SetReadDeadline(time.Now().Add(c.g.cfg.PongTimeout))
	})
	go c.writeLoop()
	c.replay(resume, resume != "")
	c.readLoop()
	<-c.writerDone
	unsubscribe()
	c.g.unregister(c)
	c.g.m.disconnects.WithLabelValues(c.closeReason).Inc()
}

func (c *conn) readLoop() {
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.terminateOnReadError(err)
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(c.g.cfg.PongTimeout))
		if mt != websocket.TextMessage {
			c.g.m.frames.WithLabelValues("in", "binary").Inc()
			c.g.m.rejected.WithLabelValues("binary_frame").Inc()
			c.enqueue(c.errorFrame("binary frames are not supported; send JSON text frames", "", ""))
			continue
		}
		c.handleFrame(data)
	}
}

func (c *conn) terminateOnReadError(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		c.g.m.limited.WithLabelValues(ratelimit.LimitFrameSize).Inc()
		c.terminate(websocket.CloseMessageTooBig, "frame too large", "too_big")
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
		c.terminate(websocket.CloseNormalClosure, "", "client_closed")
	case errors.As(err, &ne) && ne.Timeout():
		c.terminate(websocket.CloseGoingAway, "ping timeout", "pong_timeout")
	default:
		c.terminate(websocket.CloseAbnormalClosure, "", "read_error")
	}
}

// handleFrame validates one client frame and, if it is a message, produces
// it; the ack (or error) is sent from the broker's callback.
func (c *conn) handleFrame(data []byte) {
	ctx, span := c.g.tracer.Start(c.g.base, "chat.receive", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("enduser.id", c.userID), attribute.String("chat.instance", c.g.cfg.InstanceID)))
	f, err := protocol.DecodeClientFrame(data, c.userID, c.g.frameLimits())
	if err != nil {
		var pe *protocol.Error
		msg, reason := "invalid frame", "invalid"
		if errors.As(err, &pe) {
			msg, reason = pe.Message, string(pe.Reason)
		}
		c.g.m.frames.WithLabelValues("in", "invalid").Inc()
		c.g.m.rejected.WithLabelValues(reason).Inc()
		span.SetStatus(codes.Error, reason)
		span.End()
		c.enqueue(c.errorFrame(msg, f.ID, ""))
		return
	}
	c.g.m.frames.WithLabelValues("in", f.Type).Inc()
	if f.Type == protocol.TypeResume {
		span.End()
		c.amu.Lock()
		c.replaying = true
		c.amu.Unlock()
		c.replay(f.Cursor, true)
		return
	}
	corr := ids.CorrelationID(f.CorrelationID)
	ctx = telemetry.WithCorrelationID(ctx, corr)
	telemetry.SetCorrelation(ctx, corr)
	if c.draining.Load() {
		c.g.m.rejected.WithLabelValues("draining").Inc()
		span.End()
		c.enqueue(c.errorFrame("server is shutting down; reconnect and send the message again", f.ID, f.CorrelationID))
		return
	}
	if msg, reason := c.overLimit(ctx); msg != "" {
		c.g.m.rejected.WithLabelValues(reason).Inc()
		span.SetStatus(codes.Error, reason)
		span.End()
		c.enqueue(c.errorFrame(msg, f.ID, f.CorrelationID))
		return
	}

	env := &envelope.Envelope{
		Type: envelope.TypeMessage, ID: ids.New(), UserID: c.userID, Content: f.Content,
		ClientID: f.ID, CorrelationID: corr, Timestamp: time.Now().UTC(), Stream: f.Stream,
	}
	span.SetAttributes(telemetry.CorrelationAttr.String(corr), attribute.String("messaging.message.id", env.ID))
	rec, err := kafka.EnvelopeRecord(kafka.TopicIncoming, env)
	if err != nil {
		span.End()
		c.enqueue(c.errorFrame("message could not be queued; please send it again", f.ID, corr))
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
			c.enqueue(c.errorFrame("message could not be queued; please send it again", f.ID, corr))
			return
		}
		c.g.m.produce.WithLabelValues("ok").Observe(time.Since(start).Seconds())
		c.g.m.accepted.Inc()
		c.g.log.DebugContext(ctx, "message accepted", "message_id", env.ID)
		c.enqueue(outFrame{typ: protocol.TypeAck, data: protocol.Encode(protocol.ServerFrame{
			Type: protocol.TypeAck, ID: env.ID, ClientID: f.ID, CorrelationID: corr,
			UserID: c.userID, Timestamp: protocol.FormatTime(env.Timestamp),
		})})
	})
}

// overLimit checks the user's message rate (shared by every instance) and
// daily token budget. When Redis cannot answer, the message goes through:
// refusing every message during a Redis blip would hurt more than a few
// unmetered ones (counted in chat_ratelimit_errors_total).
func (c *conn) overLimit(ctx context.Context) (msg, reason string) {
	res, err := c.g.lim.Messages.Allow(ctx, c.userID)
	switch {
	case err != nil:
		c.g.m.limitErrors.WithLabelValues(ratelimit.LimitUserMessages).Inc()
	case !res.Allowed:
		c.g.m.limited.WithLabelValues(ratelimit.LimitUserMessages).Inc()
		return fmt.Sprintf("too many messages; send again in %s", retryAfter(res.RetryAfter)+"s"), "rate_limited"
	}
	left, err := c.g.lim.Tokens.Remaining(ctx, c.userID)
	switch {
	case err != nil:
		c.g.m.limitErrors.WithLabelValues(ratelimit.LimitUserTokens).Inc()
	case left == 0:
		c.g.m.limited.WithLabelValues(ratelimit.LimitUserTokens).Inc()
		return "daily limit reached; it resets at 00:00 UTC", "token_budget"
	}
	return "", ""
}

func (c *conn) errorFrame(msg, clientID, corr string) outFrame {
	f := protocol.ErrorFrame(c.userID, msg)
	f.ClientID, f.CorrelationID = clientID, corr
	return outFrame{typ: protocol.TypeError, data: protocol.Encode(f)}
}

// Deliver queues an answer published for this user (redisbus.Sink). It runs
// on the hub's receive loop, so it never blocks.
func (c *conn) Deliver(e *envelope.Envelope) {
	c.amu.Lock()
	defer c.amu.Unlock()
	if c.replaying {
		c.pending = append(c.pending, e)
		return
	}
	c.sendAnswerLocked(e, false)
}

// Resync (redisbus.Sink) replays what may have been published while the
// gateway's Redis subscription was down, from the last answer this socket
// got; live answers wait meanwhile, as on connect.
func (c *conn) Resync() {
	c.amu.Lock()
	if c.replaying {
		c.amu.Unlock()
		return // a replay is already on its way and will cover it
	}
	c.replaying = true
	cursor := c.lastCursor
	c.amu.Unlock()
	go c.replay(cursor, cursor != "")
}

// replay sends the answers after cursor (explicit: the client's; otherwise
// the user's delivered marker), then the live answers that arrived
// meanwhile, then lets live answers through directly.
func (c *conn) replay(cursor string, explicit bool) {
	ctx, cancel := context.WithTimeout(c.g.base, 5*time.Second)
	defer cancel()
	var entries []*envelope.Envelope
	var err error
	if !explicit {
		cursor, err = c.g.history.Delivered(ctx, c.userID)
	}
	if err == nil {
		entries, err = c.g.history.Since(ctx, c.userID, cursor, replayLimit)
	}
	if err != nil {
		// Live delivery goes on; what was missed stays in the history for
		// the next connection.
		c.g.log.WarnContext(ctx, "history replay failed", "error", err)
	}
	c.amu.Lock()
	defer c.amu.Unlock()
	for _, e := range entries {
		if c.sendAnswerLocked(e, true) {
			c.g.m.replayed.Inc()
		}
	}
	for _, e := range c.pending {
		c.sendAnswerLocked(e, false)
	}
	c.pending, c.replaying = nil, false
}

// replayLimit bounds one replay; the history itself is capped.
const replayLimit = 1000

// sendAnswerLocked queues e unless this connection already had it.
func (c *conn) sendAnswerLocked(e *envelope.Envelope, replayed bool) bool {
	if e.Type == envelope.TypeChunk {
		// A preview of an answer in the writing: no cursor, no history,
		// no span of its own; the final response follows it.
		c.enqueue(outFrame{typ: e.Type, data: protocol.Encode(protocol.ServerFrame{
			Type: protocol.TypeChunk, ID: e.ID, UserID: e.UserID, ReplyTo: e.ReplyTo, ClientID: e.ClientID,
			CorrelationID: e.CorrelationID, Seq: e.Seq, Delta: e.Content, Timestamp: protocol.FormatTime(e.Timestamp),
		})})
		return false
	}
	if e.Cursor != "" {
		if history.CompareCursors(e.Cursor, c.lastCursor) <= 0 {
			c.g.m.duplicates.Inc()
			return false
		}
		c.lastCursor = e.Cursor
	}
	parent := otel.GetTextMapPropagator().Extract(c.g.base, envelope.Carrier{E: e})
	ctx := telemetry.WithCorrelationID(parent, e.CorrelationID)
	_, span := c.g.tracer.Start(ctx, "chat.deliver", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(telemetry.CorrelationAttr.String(e.CorrelationID),
			attribute.String("messaging.message.id", e.ID), attribute.String("chat.reply_to", e.ReplyTo),
			attribute.String("chat.instance", c.g.cfg.InstanceID), attribute.Bool("chat.replayed", replayed)))
	f := protocol.ServerFrame{
		Type: e.Type, ID: e.ID, UserID: e.UserID, Timestamp: protocol.FormatTime(e.Timestamp),
		ReplyTo: e.ReplyTo, ClientID: e.ClientID, CorrelationID: e.CorrelationID, Cursor: e.Cursor,
	}
	if e.Type == envelope.TypeError {
		f.Message = e.Content
	} else {
		f.Content = e.Content
	}
	acceptedAt := e.AcceptedAt
	if replayed {
		acceptedAt = time.Time{} // not a live latency
	}
	c.enqueue(outFrame{typ: e.Type, data: protocol.Encode(f), span: span, acceptedAt: acceptedAt, cursor: e.Cursor})
	return true
}

// enqueue hands f to the writer without blocking. A full queue means the
// client does not keep up: it is closed (it can reconnect) rather than let
// it hold memory or slow anyone else.
func (c *conn) enqueue(f outFrame) {
	select {
	case <-c.done:
		c.drop(f, "closed")
		return
	default:
	}
	select {
	case c.send <- f:
	default:
		c.drop(f, "slow_consumer")
		c.terminate(websocket.ClosePolicyViolation, "client too slow", "slow_consumer")
	}
}

func (c *conn) drop(f outFrame, reason string) {
	if f.data == nil {
		return
	}
	c.g.m.dropped.WithLabelValues(reason).Inc()
	if f.span != nil {
		f.span.SetStatus(codes.Error, "not delivered: "+reason)
		f.span.End()
	}
}

// terminate starts closing the socket with code; the first reason wins.
func (c *conn) terminate(code int, text, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText, c.closeReason = code, text, reason
		close(c.done)
	})
}

// stopReading makes the socket refuse new messages (shutdown).
func (c *conn) stopReading() { c.draining.Store(true) }

// closeAfterQueue closes with code once the frames queued so far are written.
func (c *conn) closeAfterQueue(code int, text, reason string) {
	select {
	case c.send <- outFrame{closeCode: code, closeText: text, closeReason: reason}:
	default:
		c.terminate(code, text, reason)
	}
}

// abort closes the socket at once.
func (c *conn) abort() {
	c.terminate(websocket.CloseGoingAway, "server shutting down", "shutdown")
	_ = c.ws.Close()
}

func (c *conn) writeLoop() {
	defer close(c.writerDone)
	ping := time.NewTicker(c.g.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case f := <-c.send:
			if f.closeCode != 0 {
				c.terminate(f.closeCode, f.closeText, f.closeReason)
				continue
			}
			if err := c.write(f); err != nil {
				c.drop(f, "write_error")
				c.terminate(websocket.CloseAbnormalClosure, "", "write_error")
				continue
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.g.cfg.WriteTimeout)); err != nil {
				c.terminate(websocket.CloseAbnormalClosure, "", "write_error")
			}
			go c.refreshSlot()
		case <-c.done:
			if c.closeCode != websocket.CloseAbnormalClosure {
				_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(time.Second))
			}
			_ = c.ws.Close()
			for {
				select {
				case f := <-c.send:
					c.drop(f, "closed")
				default:
					return
				}
			}
		}
	}
}

// refreshSlot keeps this socket's slot in the user's socket limit alive
// (slots of a crashed instance expire). A slot lost to expiry is taken
// again if there is room; otherwise the socket is over the limit and closes.
func (c *conn) refreshSlot() {
	ctx, cancel := context.WithTimeout(c.g.base, 5*time.Second)
	defer cancel()
	ok, err := c.g.lim.Sockets.Refresh(ctx, c.userID, c.connID)
	if err != nil {
		c.g.m.limitErrors.WithLabelValues(ratelimit.LimitUserSockets).Inc()
		return
	}
	if !ok {
		c.g.m.limited.WithLabelValues(ratelimit.LimitUserSockets).Inc()
		c.terminate(websocket.ClosePolicyViolation, "too many connections for this user", "limited")
	}
}

func (c *conn) write(f outFrame) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
		return err
	}
	c.g.m.frames.WithLabelValues("out", f.typ).Inc()
	if !f.acceptedAt.IsZero() {
		telemetry.ObserveWithTrace(c.g.m.e2e, time.Since(f.acceptedAt).Seconds(), f.span)
	}
	if f.span != nil {
		f.span.End()
	}
	if f.cursor != "" {
		c.g.marks.mark(c.userID, f.cursor)
	}
	return nil
}
