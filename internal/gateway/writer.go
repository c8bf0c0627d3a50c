package gateway

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/codes"

	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/telemetry"
)

// The send side of a socket. Frames are written in the order they are
// queued, by one writer at a time:
//
//   - When nothing is queued or being written, the caller that queues a
//     text frame writes it itself, with one system call that does not
//     block (writeInline). Most frames leave this way, and no goroutine is
//     started or woken for them: on a busy process each goroutine started
//     is a thread woken on another core and put back to sleep, which cost
//     more than the write.
//   - Otherwise — frames already queued, a write the kernel took only part
//     of, pings, pongs and the close — a writer goroutine is started that
//     writes the queue with a deadline (WS_WRITE_TIMEOUT) and ends when it
//     is empty.
//
// Text frames are encoded here (a server's frames are not masked, and no
// extension is negotiated); gorilla writes the control frames. Both go
// through the same writer, so they never interleave on the wire.

// enqueue hands f to the writer without blocking: it writes f at once when
// no writer runs, else queues it, starting a writer if none runs. A live
// frame (bounded) over WS_SEND_QUEUE means the client does not keep up: it
// is closed (it can reconnect and resume) rather than let it hold memory or
// slow anyone else. Replayed answers are not bounded here: a replay is
// bounded by the history's length.
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
	f.bounded = bounded
	if !s.writing && s.rc != nil && f.control == 0 && f.closeWith == nil {
		s.writing = true // the queue is empty: nothing is ahead of f
		s.qmu.Unlock()
		s.writeInline(f)
		return
	}
	if bounded {
		s.live++
	}
	s.queue = append(s.queue, f)
	s.startWriterLocked()
	s.qmu.Unlock()
}

func (s *socket) startWriterLocked() {
	if !s.writing {
		s.writing = true
		goWrite(s)
	}
}

// goWrite starts a writer goroutine.
func goWrite(s *socket) {
	if writerStarted != nil {
		writerStarted()
	}
	go s.writeLoop()
}

// writerStarted is a seam: tests count the writer goroutines started.
var writerStarted func()

// writeInline writes f with one non-blocking write, as the writer that
// enqueue made the caller. What the kernel did not take, and whatever was
// queued meanwhile, is left to a writer goroutine; so is the close if the
// socket terminated meanwhile.
func (s *socket) writeInline(f outFrame) {
	frame := appendTextFrame(make([]byte, 0, len(f.data)+10), f.data)
	n, err := writeNonblocking(s.rc, frame)
	switch {
	case err != nil:
		s.drop(f, protocol.WriteError.Reason)
		s.terminate(&protocol.WriteError) // the writer started below closes
	case n == len(frame):
		s.sent(f)
	}
	dropped := false
	s.qmu.Lock()
	if err == nil && n < len(frame) {
		f.rest = frame[n:]
		if s.closing {
			s.torn, dropped = n > 0, true
		} else {
			// The rest goes first: nothing queued meanwhile may pass it.
			if f.bounded {
				s.live++
			}
			s.queue = append([]outFrame{f}, s.queue...)
		}
	}
	if len(s.queue) == 0 && !s.closing {
		s.writing = false
	} else {
		goWrite(s)
	}
	s.qmu.Unlock()
	if dropped {
		s.drop(f, dropClosed)
	}
}

// writeNonblocking makes one write(2) of b. The descriptor is non-blocking
// (Go's poller made it so), so a full socket buffer returns at once: n is
// what the kernel took, and a full buffer is not an error.
func writeNonblocking(rc syscall.RawConn, b []byte) (n int, err error) {
	werr := rc.Write(func(fd uintptr) bool {
		for {
			n, err = syscall.Write(int(fd), b)
			if err != syscall.EINTR {
				return true // done, whatever happened: never wait here
			}
		}
	})
	if werr != nil {
		return 0, werr // closed, or past a deadline (abort)
	}
	if errors.Is(err, syscall.EAGAIN) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// appendTextFrame appends a final, unmasked text frame carrying p (RFC 6455
// §5.2).
func appendTextFrame(dst, p []byte) []byte {
	dst = append(dst, 0x80|websocket.TextMessage)
	switch n := len(p); {
	case n <= 125:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, p...)
}

func (s *socket) drop(f outFrame, reason string) {
	if f.data == nil || f.control != 0 {
		return
	}
	s.m.dropped.WithLabelValues(reason).Inc()
	if f.span != nil {
		f.span.SetStatus(codes.Error, "not delivered: "+reason)
		f.span.End()
	}
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
			if len(left) > 0 && left[0].rest != nil {
				s.torn = true // the rest of an inline write is dropped
			}
			for _, f := range left {
				s.drop(f, dropClosed)
			}
			s.closeSocket()
			return
		}
		if len(s.queue) == 0 {
			s.queue = nil // an idle socket keeps no queue memory
			s.writing = false
			// An inline write must not meet this writer's old deadline.
			// (Under qmu: abort's deadline is set after its terminate.)
			_ = s.netConn.SetWriteDeadline(time.Time{})
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
	deadline := time.Now().Add(s.cfg.WriteTimeout)
	switch {
	case f.closeWith != nil:
		s.terminate(f.closeWith)
	case f.control != 0:
		if err := s.ws.WriteControl(f.control, f.data, deadline); err != nil {
			s.terminate(&protocol.WriteError)
		}
	default:
		frame := f.rest
		if frame == nil {
			frame = appendTextFrame(make([]byte, 0, len(f.data)+10), f.data)
		}
		_ = s.netConn.SetWriteDeadline(deadline)
		if n, err := s.netConn.Write(frame); err != nil {
			s.torn = n > 0 || f.rest != nil
			s.drop(f, protocol.WriteError.Reason)
			s.terminate(&protocol.WriteError)
			return
		}
		s.sent(f)
	}
}

// sent accounts for a text frame the kernel has taken whole.
func (s *socket) sent(f outFrame) {
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
}

// closeSocket sends the close frame (unless the connection already failed,
// or a frame was left half written: a close frame after it would be read as
// the frame's rest) and closes; it runs once, on the writer that found
// closing set.
func (s *socket) closeSocket() {
	if s.ws == nil {
		// Never attached (refused before the upgrade finished): the
		// handshake cleans up.
		close(s.closed)
		return
	}
	if r := s.closeWith; r.Code != protocol.CloseAbnormal && !s.torn {
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
