package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	"github.com/chatrelay/chat/internal/netpoll"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/telemetry"
)

// conn is one client socket. It costs no goroutine while idle but its
// reader, which sits in the runtime's netpoller with a small stack: there is
// no writer goroutine per socket (one is started when frames are queued and
// ends when the queue is empty) and no ticker (pings come from a runtime
// timer). The writer owns every write and the final close, so frames from
// produce callbacks and Redis deliveries never interleave on the wire.
type conn struct {
	g      *Gateway
	userID string
	connID string // this socket's slot in the user's socket limit
	ws     *websocket.Conn

	done     chan struct{} // closed by terminate: the socket is finishing
	closed   chan struct{} // closed by the writer once the socket is closed
	draining atomic.Bool
	pinger   *time.Timer
	cleanup  func()

	// With the poller, the socket is read only when the kernel says it is
	// readable, on a goroutine that lives until the data is read (reading
	// makes sure there is one at a time); lastSeen is when the client last
	// sent anything, pongs included, since there is no blocked read whose
	// deadline would notice a dead client.
	br       *bufio.Reader
	netConn  net.Conn
	fd       int
	polled   atomic.Bool
	reading  atomic.Bool
	lastSeen atomic.Int64

	// qmu guards the send queue and the close order. The queue is a slice
	// that is nil while empty, so an idle socket holds no queue memory.
	qmu         sync.Mutex
	queue       []outFrame
	writing     bool // a writer goroutine is running
	closing     bool
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
// close once everything queued before it is written, one with ping set is a
// ping.
type outFrame struct {
	data       []byte
	typ        string
	span       trace.Span
	acceptedAt time.Time
	cursor     string
	ping       bool

	closeCode   int
	closeText   string
	closeReason string
}

func newConn(g *Gateway, userID string) *conn {
	return &conn{
		g: g, userID: userID,
		done:      make(chan struct{}),
		closed:    make(chan struct{}),
		replaying: true, // live answers wait until the first replay is done
	}
}

// attach gives c its socket; it runs before c is registered, so a shutdown
// that finds c (and closes it) finds it whole.
func (c *conn) attach(ws *websocket.Conn, br *bufio.Reader, cleanup func()) {
	c.ws, c.br, c.netConn, c.cleanup = ws, br, ws.NetConn(), cleanup
	c.lastSeen.Store(time.Now().UnixNano())
	ws.SetReadLimit(c.g.cfg.ReadLimit)
	_ = ws.SetReadDeadline(time.Now().Add(c.g.cfg.PongTimeout))
	ws.SetPongHandler(func(string) error {
		c.lastSeen.Store(time.Now().UnixNano())
		return ws.SetReadDeadline(time.Now().Add(c.g.cfg.PongTimeout))
	})
}

// start runs the attached socket on goroutines of its own and returns; the
// cleanup runs once the socket is closed. The user's channel is already
// subscribed: answers published from now on are buffered while the history
// after the client's cursor (or after what was last delivered to the user)
// is replayed, so the hand-over has neither gap nor duplicate. Reading
// starts after the replay: on the poller when there is one, else on a fresh
// goroutine, so the stack that grew during the handshake and the replay is
// not kept for the socket's life.
func (c *conn) start(resume string) {
	// Sockets connected together are pinged spread over the interval, not
	// all in the same instant.
	c.pinger = time.AfterFunc(c.g.cfg.PingInterval/2+rand.N(c.g.cfg.PingInterval/2+1), c.ping)
	go func() {
		c.replay(resume, resume != "")
		if c.poll() {
			return
		}
		go c.serve()
	}()
}

// poll hands the socket to the poller; false means read it on a goroutine.
func (c *conn) poll() bool {
	p := c.g.poller
	if p == nil || c.br == nil {
		return false
	}
	fd, err := netpoll.FD(c.netConn)
	if err != nil {
		return false
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		// Closed during the replay: the reader goroutine sees the socket
		// fail at once and does the cleanup.
		return false
	}
	c.fd = fd
	if err := p.Add(fd, c); err != nil {
		return false
	}
	c.polled.Store(true)
	return true
}

// serve reads until the socket fails or closes, then waits for the writer
// to close it and unregisters.
func (c *conn) serve() {
	c.readLoop()
	<-c.closed
	c.finish()
}

// finish releases what the socket held, once it is closed.
func (c *conn) finish() {
	c.pinger.Stop()
	c.cleanup()
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
		c.handleMessage(mt, data)
	}
}

// Ready (netpoll.Handler) is the poller saying the socket is readable.
func (c *conn) Ready() {
	if c.reading.CompareAndSwap(false, true) {
		go c.readReady()
	}
}

// readReady reads what the client sent, then asks the poller to report the
// socket again. A frame the kernel has only half of is waited for up to
// WS_PONG_TIMEOUT on this goroutine.
func (c *conn) readReady() {
	c.lastSeen.Store(time.Now().UnixNano())
	_ = c.netConn.SetReadDeadline(time.Now().Add(c.g.cfg.PongTimeout))
	for {
		if err := c.readFrame(); err != nil {
			c.reading.Store(false)
			c.terminateOnReadError(err)
			return
		}
		if c.br.Buffered() == 0 {
			break
		}
	}
	c.reading.Store(false)
	_ = c.g.poller.Rearm(c.fd) // fails only once the socket is closed
}

// errProtocol is a control frame RFC 6455 does not allow.
var errProtocol = errors.New("websocket: malformed control frame")

// readFrame reads one message, or one ping or pong. gorilla/websocket reads
// a message and every control frame before it, but then waits for the next
// message: a pong on an idle socket would hold a goroutine until the client
// spoke again. So control frames at a message boundary are read here (the
// reader is at a frame boundary, gorilla's state untouched); everything
// else, including control frames inside a fragmented message, is gorilla's.
func (c *conn) readFrame() error {
	hdr, err := c.br.Peek(2)
	if err != nil {
		return err
	}
	op := int(hdr[0] & 0x0f)
	if op != websocket.PingMessage && op != websocket.PongMessage {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		c.handleMessage(mt, data)
		return nil
	}
	// FIN set, no RSV bits (nothing is negotiated), masked (from a client),
	// payload at most 125 bytes.
	n := int(hdr[1] & 0x7f)
	if hdr[0]&0xf0 != 0x80 || hdr[1]&0x80 == 0 || n > 125 {
		return errProtocol
	}
	frame, err := c.br.Peek(6 + n)
	if err != nil {
		return err
	}
	if op == websocket.PingMessage {
		payload := make([]byte, n)
		for i := range n {
			payload[i] = frame[6+i] ^ frame[2+i%4]
		}
		if err := c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(c.g.cfg.WriteTimeout)); err != nil {
			c.terminate(websocket.CloseAbnormalClosure, "", "write_error")
		}
	}
	_, _ = c.br.Discard(6 + n)
	return nil
}

// handleMessage handles one client message.
func (c *conn) handleMessage(mt int, data []byte) {
	if mt != websocket.TextMessage {
		c.g.m.frames.WithLabelValues("in", "binary").Inc()
		c.g.m.rejected.WithLabelValues("binary_frame").Inc()
		c.enqueue(c.errorFrame("binary frames are not supported; send JSON text frames", "", ""))
		return
	}
	c.handleFrame(data)
}

func (c *conn) terminateOnReadError(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errProtocol):
		c.terminate(websocket.CloseProtocolError, "protocol error", "protocol_error")
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
	if explicit {
		entries, err = c.g.history.Since(ctx, c.userID, cursor, replayLimit)
	} else {
		entries, err = c.g.history.SinceDelivered(ctx, c.userID, replayLimit)
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

// enqueue hands f to the writer without blocking, starting one if none
// runs. A full queue means the client does not keep up: it is closed (it can
// reconnect) rather than let it hold memory or slow anyone else.
func (c *conn) enqueue(f outFrame) {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		c.drop(f, "closed")
		return
	}
	if len(c.queue) >= c.g.cfg.SendQueue {
		c.qmu.Unlock()
		c.drop(f, "slow_consumer")
		c.terminate(websocket.ClosePolicyViolation, "client too slow", "slow_consumer")
		return
	}
	c.queue = append(c.queue, f)
	c.startWriterLocked()
	c.qmu.Unlock()
}

func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.writeLoop()
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
// Frames still queued are dropped; the writer sends the close frame.
func (c *conn) terminate(code int, text, reason string) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		return
	}
	c.closing = true
	c.closeCode, c.closeText, c.closeReason = code, text, reason
	close(c.done)
	c.startWriterLocked()
}

// stopReading makes the socket refuse new messages (shutdown).
func (c *conn) stopReading() { c.draining.Store(true) }

// closeAfterQueue closes with code once the frames queued so far are written.
func (c *conn) closeAfterQueue(code int, text, reason string) {
	c.enqueue(outFrame{closeCode: code, closeText: text, closeReason: reason})
}

// abort closes the socket at once: the deadline in the past fails a write
// in progress, and the writer then closes the socket (taking it off the
// poller first, which closing it here could not).
func (c *conn) abort() {
	c.terminate(websocket.CloseGoingAway, "server shutting down", "shutdown")
	_ = c.netConn.SetDeadline(time.Now())
}

// ping runs on the pinger timer: it closes a socket whose client has been
// silent too long, queues a ping and keeps the user's socket slot alive,
// then re-arms itself.
func (c *conn) ping() {
	select {
	case <-c.done:
		return
	default:
	}
	if c.polled.Load() && time.Since(time.Unix(0, c.lastSeen.Load())) > c.g.cfg.PongTimeout {
		c.terminate(websocket.CloseGoingAway, "ping timeout", "pong_timeout")
		return
	}
	c.enqueue(outFrame{ping: true})
	c.refreshSlot()
	c.pinger.Reset(c.g.cfg.PingInterval)
}

// writeLoop writes the queue in order and ends when it is empty; after
// terminate it sends the close frame, closes the socket and drops what is
// left.
func (c *conn) writeLoop() {
	for {
		c.qmu.Lock()
		if c.closing {
			left := c.queue
			c.queue = nil
			c.qmu.Unlock()
			for _, f := range left {
				c.drop(f, "closed")
			}
			c.closeSocket()
			return
		}
		if len(c.queue) == 0 {
			c.queue = nil // an idle socket keeps no queue memory
			c.writing = false
			c.qmu.Unlock()
			return
		}
		f := c.queue[0]
		c.queue[0] = outFrame{}
		c.queue = c.queue[1:]
		c.qmu.Unlock()

		switch {
		case f.closeCode != 0:
			c.terminate(f.closeCode, f.closeText, f.closeReason)
		case f.ping:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.g.cfg.WriteTimeout)); err != nil {
				c.terminate(websocket.CloseAbnormalClosure, "", "write_error")
			}
		default:
			if err := c.write(f); err != nil {
				c.drop(f, "write_error")
				c.terminate(websocket.CloseAbnormalClosure, "", "write_error")
			}
		}
	}
}

// closeSocket sends the close frame (unless the connection already failed)
// and closes; it runs once, on the writer that found closing set.
func (c *conn) closeSocket() {
	if c.closeCode != websocket.CloseAbnormalClosure {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(time.Second))
	}
	polled := c.polled.Load()
	if polled {
		c.g.poller.Remove(c.fd, c)
	}
	_ = c.ws.Close()
	close(c.closed)
	if polled {
		c.finish() // no reader goroutine is waiting to do it
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
