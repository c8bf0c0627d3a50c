package gateway

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/netpoll"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/telemetry"
)

// socket is the transport of one client connection: reading (on the
// poller, or on a goroutine), the send queue and its writer, pings, and
// the close order. It knows frames as bytes; what they mean is its owner's.
//
// It costs no goroutine while idle but its reader, which sits in the
// runtime's netpoller with a small stack: there is no writer goroutine per
// socket (one is started when frames are queued and ends when the queue is
// empty) and no ticker (pings come from a runtime timer). The writer owns
// every write and the final close, so frames from produce callbacks and
// Redis deliveries never interleave on the wire.
type socket struct {
	cfg    *Config
	m      *metrics
	poller *netpoll.Poller
	owner  socketOwner
	ws     *websocket.Conn

	done   chan struct{} // closed by terminate: the socket is finishing
	closed chan struct{} // closed by the writer once the socket is closed
	pinger *time.Timer

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

	// qmu guards the send queue and the close order. Invariants: frames
	// leave the queue in the order they entered it; once closing is set
	// nothing more is queued and closeWith is fixed (the first reason
	// wins); at most one writer goroutine runs (writing). The queue is a
	// slice that is nil while empty, so an idle socket holds no queue
	// memory.
	qmu       sync.Mutex
	queue     []outFrame
	live      int // frames in queue that count against WS_SEND_QUEUE
	writing   bool
	closing   bool
	closeWith *protocol.Refusal
}

// socketOwner is what a socket needs from the connection that owns it.
type socketOwner interface {
	// handleMessage handles one client message (text or binary).
	handleMessage(mt int, data []byte)
	// tick runs on each ping; false means the socket was told to close.
	tick() bool
	// nextTick bounds the wait until the next tick (e.g. a token's
	// expiry); 0 means the ping interval.
	nextTick() time.Duration
	// written runs once an answer with a history cursor reached the
	// kernel.
	written(cursor string)
	// finished runs once, after the socket is closed.
	finished(reason string)
}

// outFrame is one queued frame: data to write, or a ping, or an order to
// close once everything queued before it is written.
type outFrame struct {
	data       []byte
	typ        string
	span       trace.Span
	acceptedAt time.Time
	cursor     string // an answer's history cursor
	ping       bool
	bounded    bool // counts against WS_SEND_QUEUE
	closeWith  *protocol.Refusal
}

func newSocket(cfg *Config, m *metrics, poller *netpoll.Poller, owner socketOwner) socket {
	return socket{cfg: cfg, m: m, poller: poller, owner: owner, done: make(chan struct{}), closed: make(chan struct{})}
}

// attach gives the socket its connection.
func (s *socket) attach(ws *websocket.Conn, br *bufio.Reader) {
	s.ws, s.br, s.netConn = ws, br, ws.NetConn()
	s.lastSeen.Store(time.Now().UnixNano())
	ws.SetReadLimit(s.cfg.ReadLimit)
	_ = ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	ws.SetPongHandler(func(string) error {
		s.lastSeen.Store(time.Now().UnixNano())
		return ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	})
}

// startPings arms the ping timer. Sockets connected together are pinged
// spread over the interval, not all in the same instant; the owner may
// want its first tick sooner.
func (s *socket) startPings() {
	s.pinger = time.AfterFunc(s.tickAfter(s.cfg.PingInterval/2+rand.N(s.cfg.PingInterval/2+1)), s.ping)
}

// tickAfter is d, or sooner if the owner wants its next tick sooner.
func (s *socket) tickAfter(d time.Duration) time.Duration {
	if n := s.owner.nextTick(); n > 0 && n < d {
		return n
	}
	return d
}

// startReading reads on the poller when there is one, else on a fresh
// goroutine, so a stack grown before (handshake, replay) is not kept.
func (s *socket) startReading() {
	if !s.poll() {
		go s.serve()
	}
}

// poll hands the socket to the poller; false means read it on a goroutine.
func (s *socket) poll() bool {
	if s.poller == nil || s.br == nil {
		return false
	}
	fd, err := netpoll.FD(s.netConn)
	if err != nil {
		return false
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closing {
		// Closed before reading started: the reader goroutine sees the
		// socket fail at once and does the cleanup.
		return false
	}
	s.fd = fd
	if err := s.poller.Add(fd, s); err != nil {
		return false
	}
	s.polled.Store(true)
	return true
}

// serve reads until the socket fails or closes, then waits for the writer
// to close it and finishes.
func (s *socket) serve() {
	for {
		mt, data, err := s.ws.ReadMessage()
		if err != nil {
			s.terminateOnReadError(err)
			break
		}
		_ = s.ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
		s.owner.handleMessage(mt, data)
	}
	<-s.closed
	s.finish()
}

// finish releases what the socket held, once it is closed.
func (s *socket) finish() {
	if s.pinger != nil {
		s.pinger.Stop()
	}
	reason := s.closeWith.Reason
	s.m.disconnects.WithLabelValues(reason).Inc()
	s.owner.finished(reason)
}

// Ready (netpoll.Handler) is the poller saying the socket is readable.
func (s *socket) Ready() {
	if s.reading.CompareAndSwap(false, true) {
		go s.readReady()
	}
}

// readReady reads what the client sent, then asks the poller to report the
// socket again. A frame the kernel has only half of is waited for up to
// WS_PONG_TIMEOUT on this goroutine.
func (s *socket) readReady() {
	s.lastSeen.Store(time.Now().UnixNano())
	_ = s.netConn.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	for {
		if err := s.readFrame(); err != nil {
			s.reading.Store(false)
			s.terminateOnReadError(err)
			return
		}
		if s.br.Buffered() == 0 {
			break
		}
	}
	s.reading.Store(false)
	_ = s.poller.Rearm(s.fd) // fails only once the socket is closed
}

// errProtocol is a control frame RFC 6455 does not allow.
var errProtocol = errors.New("websocket: malformed control frame")

// readFrame reads one message, or one ping or pong. gorilla/websocket reads
// a message and every control frame before it, but then waits for the next
// message: a pong on an idle socket would hold a goroutine until the client
// spoke again. So control frames at a message boundary are read here (the
// reader is at a frame boundary, gorilla's state untouched); everything
// else, including control frames inside a fragmented message, is gorilla's.
func (s *socket) readFrame() error {
	hdr, err := s.br.Peek(2)
	if err != nil {
		return err
	}
	op := int(hdr[0] & 0x0f)
	if op != websocket.PingMessage && op != websocket.PongMessage {
		mt, data, err := s.ws.ReadMessage()
		if err != nil {
			return err
		}
		s.owner.handleMessage(mt, data)
		return nil
	}
	// FIN set, no RSV bits (nothing is negotiated), masked (from a client),
	// payload at most 125 bytes.
	n := int(hdr[1] & 0x7f)
	if hdr[0]&0xf0 != 0x80 || hdr[1]&0x80 == 0 || n > 125 {
		return errProtocol
	}
	frame, err := s.br.Peek(6 + n)
	if err != nil {
		return err
	}
	if op == websocket.PingMessage {
		payload := make([]byte, n)
		for i := range n {
			payload[i] = frame[6+i] ^ frame[2+i%4]
		}
		if err := s.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
			s.terminate(&protocol.WriteError)
		}
	}
	_, _ = s.br.Discard(6 + n)
	return nil
}

func (s *socket) terminateOnReadError(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errProtocol):
		s.terminate(&protocol.ProtocolError)
	case errors.Is(err, websocket.ErrReadLimit):
		s.m.limited.WithLabelValues(limitFrameSize).Inc()
		s.terminate(&protocol.TooBig)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
		s.terminate(&protocol.ClientClosed)
	case errors.As(err, &ne) && ne.Timeout():
		s.terminate(&protocol.PongTimeout)
	default:
		s.terminate(&protocol.ReadError)
	}
}

// enqueue hands f to the writer without blocking, starting one if none
// runs. A live frame (bounded) over WS_SEND_QUEUE means the client does not
// keep up: it is closed (it can reconnect and resume) rather than let it
// hold memory or slow anyone else. Replayed answers are not bounded here:
// a replay is bounded by the history's length.
func (s *socket) enqueue(f outFrame, bounded bool) {
	s.qmu.Lock()
	if s.closing {
		s.qmu.Unlock()
		s.drop(f, dropClosed)
		return
	}
	if bounded && s.live >= s.cfg.SendQueue {
		s.qmu.Unlock()
		s.drop(f, protocol.SlowConsumer.Reason)
		s.terminate(&protocol.SlowConsumer)
		return
	}
	if bounded {
		s.live++
	}
	f.bounded = bounded
	s.queue = append(s.queue, f)
	s.startWriterLocked()
	s.qmu.Unlock()
}

func (s *socket) startWriterLocked() {
	if !s.writing {
		s.writing = true
		go s.writeLoop()
	}
}

func (s *socket) drop(f outFrame, reason string) {
	if f.data == nil {
		return
	}
	s.m.dropped.WithLabelValues(reason).Inc()
	if f.span != nil {
		f.span.SetStatus(codes.Error, "not delivered: "+reason)
		f.span.End()
	}
}

// terminate starts closing the socket with r; the first reason wins.
// Frames still queued are dropped; the writer sends the close frame.
func (s *socket) terminate(r *protocol.Refusal) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.closing {
		return
	}
	s.closing, s.closeWith = true, r
	close(s.done)
	s.startWriterLocked()
}

// closeAfterQueue closes with r once the frames queued so far are written.
func (s *socket) closeAfterQueue(r *protocol.Refusal) {
	s.enqueue(outFrame{closeWith: r}, false)
}

// abort closes the socket at once: the deadline in the past fails a write
// in progress, and the writer then closes the socket (taking it off the
// poller first, which closing it here could not).
func (s *socket) abort() {
	s.terminate(&protocol.Shutdown)
	if s.netConn != nil {
		_ = s.netConn.SetDeadline(time.Now())
	}
}

// ping runs on the pinger timer: it closes a socket whose client has been
// silent too long, lets the owner check what it must (its slot, its token),
// queues a ping and re-arms itself.
func (s *socket) ping() {
	select {
	case <-s.done:
		return
	default:
	}
	if s.polled.Load() && time.Since(time.Unix(0, s.lastSeen.Load())) > s.cfg.PongTimeout {
		s.terminate(&protocol.PongTimeout)
		return
	}
	if !s.owner.tick() {
		return
	}
	s.enqueue(outFrame{ping: true}, false)
	s.pinger.Reset(s.tickAfter(s.cfg.PingInterval))
}

// writeLoop writes the queue in order and ends when it is empty; after
// terminate it sends the close frame, closes the socket and drops what is
// left.
func (s *socket) writeLoop() {
	for {
		s.qmu.Lock()
		if s.closing {
			left := s.queue
			s.queue, s.live = nil, 0
			s.qmu.Unlock()
			for _, f := range left {
				s.drop(f, dropClosed)
			}
			s.closeSocket()
			return
		}
		if len(s.queue) == 0 {
			s.queue = nil // an idle socket keeps no queue memory
			s.writing = false
			s.qmu.Unlock()
			return
		}
		f := s.queue[0]
		s.queue[0] = outFrame{}
		s.queue = s.queue[1:]
		if f.bounded {
			s.live--
		}
		s.qmu.Unlock()
		s.writeOne(f)
	}
}

func (s *socket) writeOne(f outFrame) {
	switch {
	case f.closeWith != nil:
		s.terminate(f.closeWith)
	case f.ping:
		if err := s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
			s.terminate(&protocol.WriteError)
		}
	default:
		if err := s.write(f); err != nil {
			s.drop(f, protocol.WriteError.Reason)
			s.terminate(&protocol.WriteError)
		}
	}
}

// closeSocket sends the close frame (unless the connection already failed)
// and closes; it runs once, on the writer that found closing set.
func (s *socket) closeSocket() {
	if s.ws == nil {
		// Never attached (refused before the upgrade finished): the
		// handshake cleans up.
		close(s.closed)
		return
	}
	if r := s.closeWith; r.Code != protocol.CloseAbnormal {
		_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(r.Code, r.Message), time.Now().Add(time.Second))
	}
	polled := s.polled.Load()
	if polled {
		s.poller.Remove(s.fd, s)
	}
	_ = s.ws.Close()
	close(s.closed)
	if polled {
		s.finish() // no reader goroutine is waiting to do it
	}
}

func (s *socket) write(f outFrame) error {
	_ = s.ws.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if err := s.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
		return err
	}
	s.m.frames.WithLabelValues("out", f.typ).Inc()
	if !f.acceptedAt.IsZero() {
		telemetry.ObserveWithTrace(s.m.e2e, time.Since(f.acceptedAt).Seconds(), f.span)
	}
	if f.span != nil {
		f.span.End()
	}
	if f.cursor != "" {
		s.owner.written(f.cursor)
	}
	return nil
}
