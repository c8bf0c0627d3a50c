package gateway

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/netpoll"
	"github.com/chatrelay/chat/internal/protocol"
)

// socket is the transport of one client connection: reading (on the
// poller, or on a goroutine), the send queue and its writer, pings, and
// the close order. It knows frames as bytes; what they mean is its owner's.
//
// It costs no goroutine while idle (the poller watches it) and no ticker
// (pings come from a runtime timer). Writing is described in writer.go: one
// writer at a time owns every write and the final close, so frames from
// produce callbacks, Redis deliveries and pongs never interleave on the
// wire.
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
	rc       syscall.RawConn // nil when netConn has no descriptor: no inline writes
	fd       int
	polled   atomic.Bool
	reading  atomic.Bool
	lastSeen atomic.Int64

	// qmu guards the send queue and the close order. Invariants: frames
	// leave the queue in the order they entered it; once closing is set
	// nothing more is queued and closeWith is fixed (the first reason
	// wins); writing is set while a writer — the writer goroutine, or a
	// caller writing its frame inline — owns the connection's writes, and
	// at most one does; while writing is unset the queue is empty. The
	// queue is a slice that is nil while empty, so an idle socket holds no
	// queue memory.
	qmu       sync.Mutex
	queue     []outFrame
	live      int // frames in queue that count against WS_SEND_QUEUE
	writing   bool
	torn      bool // a text frame is half written: no close frame may follow (the writer's)
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

// outFrame is one queued frame: a text message, or a ping or pong (control,
// with data as its payload), or an order to close once everything queued
// before it is written.
type outFrame struct {
	data       []byte
	rest       []byte // what an inline write left of the encoded frame
	typ        string
	span       trace.Span
	acceptedAt time.Time
	cursor     string // an answer's history cursor
	control    int    // websocket.PingMessage or PongMessage
	bounded    bool   // counts against WS_SEND_QUEUE
	closeWith  *protocol.Refusal
}

func newSocket(cfg *Config, m *metrics, poller *netpoll.Poller, owner socketOwner) socket {
	return socket{cfg: cfg, m: m, poller: poller, owner: owner, done: make(chan struct{}), closed: make(chan struct{})}
}

// attach gives the socket its connection.
func (s *socket) attach(ws *websocket.Conn, br *bufio.Reader) {
	s.ws, s.br, s.netConn = ws, br, ws.NetConn()
	if sc, ok := s.netConn.(syscall.Conn); ok {
		s.rc, _ = sc.SyscallConn()
	}
	s.lastSeen.Store(time.Now().UnixNano())
	ws.SetReadLimit(s.cfg.ReadLimit)
	_ = ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	ws.SetPongHandler(func(string) error {
		s.lastSeen.Store(time.Now().UnixNano())
		return ws.SetReadDeadline(time.Now().Add(s.cfg.PongTimeout))
	})
	// gorilla answers the pings and close frames it reads by writing from
	// the reader; here every write is the writer's (writer.go), so a ping's
	// pong is queued, and a client's close frame, whatever its code, closes
	// the socket as ClientClosed (the writer answers it with 1000).
	ws.SetPingHandler(func(payload string) error {
		s.enqueue(outFrame{control: websocket.PongMessage, data: []byte(payload)}, false)
		return nil
	})
	ws.SetCloseHandler(func(int, string) error {
		s.terminate(&protocol.ClientClosed)
		return nil
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
		s.enqueue(outFrame{control: websocket.PongMessage, data: payload}, false)
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
	s.enqueue(outFrame{control: websocket.PingMessage}, false)
	s.pinger.Reset(s.tickAfter(s.cfg.PingInterval))
}
