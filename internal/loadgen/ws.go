package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A minimal RFC 6455 client. The load generator holds tens of thousands of
// sockets per process, so a socket owns no goroutine and no buffer while it
// is idle: reads are driven by an epoll poller (poller.go) and parsed here
// from a buffer shared by the poller, partial frames are copied aside only
// when a read ends mid-frame, and writes build each frame in a pooled buffer.

const (
	wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	// maxFrame bounds a server frame or reassembled message.
	maxFrame = 16 << 20
	// writeTimeout bounds one frame write.
	writeTimeout = 10 * time.Second
)

// errHandshake is a refused upgrade; status is the HTTP status.
type errHandshake struct {
	status int
	msg    string
}

func (e *errHandshake) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("upgrade refused: HTTP %d", e.status)
	}
	return "bad handshake: " + e.msg
}

// endpoint is one -url target.
type endpoint struct {
	raw      string // as given, for reports
	hostport string // dial address
	host     string // Host header
	path     string // request path, e.g. /ws
	query    string // extra query from the URL, without '?'
}

// dialWS opens a TCP connection to ep from local (nil: the kernel's choice)
// and performs the opening handshake for requestURI. Bytes the server sent
// right after the 101 response are returned as leftover.
func dialWS(ctx context.Context, ep *endpoint, requestURI string, local *net.TCPAddr, timeout time.Duration) (*net.TCPConn, []byte, error) {
	d := net.Dialer{Timeout: timeout}
	if local != nil {
		d.LocalAddr = local
		// Choose the port at connect time rather than bind time, so that a
		// source address has a full port range per destination.
		d.Control = func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
		}
	}
	conn, err := d.DialContext(ctx, "tcp", ep.hostport)
	if err != nil {
		return nil, nil, err
	}
	nc := conn.(*net.TCPConn)
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	_ = nc.SetDeadline(time.Now().Add(timeout))

	var kb [16]byte
	_, _ = rand.Read(kb[:])
	key := base64.StdEncoding.EncodeToString(kb[:])
	req := "GET " + requestURI + " HTTP/1.1\r\nHost: " + ep.host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: chat-loadgen\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		return nil, nil, &errHandshake{status: resp.StatusCode}
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		return nil, nil, &errHandshake{msg: "no Upgrade: websocket"}
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, nil, &errHandshake{msg: "wrong Sec-WebSocket-Accept"}
	}
	var leftover []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		leftover = append([]byte(nil), b...)
	}
	_ = nc.SetDeadline(time.Time{})
	ok = true
	return nc, leftover, nil
}

// dialReason classifies a failed connection attempt into a bounded label.
func dialReason(err error) string {
	var he *errHandshake
	var ne net.Error
	switch {
	case errors.As(err, &he):
		if he.status != 0 {
			return fmt.Sprintf("http_%d", he.status)
		}
		return "bad_handshake"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_local_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_open_files"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "other"
	}
}

// frameHandler receives what a connection reads.
type frameHandler interface {
	// onMessage gets a complete text or binary message; data is only valid
	// during the call.
	onMessage(c *wsConn, data []byte, at time.Time)
	// onClosed is told once that the connection closed and why, unless the
	// close was ours (closeQuiet).
	onClosed(c *wsConn, reason string)
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// wsConn is one client socket.
type wsConn struct {
	nc *net.TCPConn
	rc syscall.RawConn
	fd int
	h  frameHandler
	p  *poller     // set while registered
	pc *polledConn // its handler in the poller

	wmu sync.Mutex

	// Reader state, owned by whoever feeds the connection: the dialer
	// before the connection is registered, then its poller only.
	rbuf   []byte // an incomplete frame carried over to the next read
	msg    []byte // a fragmented message being reassembled
	msgOn  bool
	closed atomic.Bool
	once   sync.Once
}

func newWSConn(nc *net.TCPConn, h frameHandler) (*wsConn, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &wsConn{nc: nc, rc: rc, h: h, fd: -1}
	if err := rc.Control(func(fd uintptr) { c.fd = int(fd) }); err != nil {
		return nil, err
	}
	return c, nil
}

// writeFrame sends one masked frame.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	return c.writeFrameTimeout(op, payload, writeTimeout)
}

func (c *wsConn) writeFrameTimeout(op byte, payload []byte, timeout time.Duration) error {
	bp := writeBufs.Get().(*[]byte)
	b := append((*bp)[:0], 0x80|op)
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], mrand.Uint32())
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range n {
		b[start+i] ^= key[i&3]
	}
	c.wmu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		writeBufs.Put(bp)
	}
	return err
}

// writeText sends a text message.
func (c *wsConn) writeText(data []byte) error { return c.writeFrame(opText, data) }

// readable reads what the socket has (without blocking) and handles it.
// buf is the poller's scratch buffer.
func (c *wsConn) readable(buf []byte) {
	if c.closed.Load() {
		return
	}
	var n int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf)
		return true
	})
	switch {
	case err != nil:
		c.close("read_error")
	case rerr == unix.EAGAIN || rerr == unix.EINTR:
	case rerr != nil:
		if errors.Is(rerr, unix.ECONNRESET) {
			c.close("reset")
		} else {
			c.close("read_error")
		}
	case n == 0:
		c.close("eof")
	default:
		c.feed(buf[:n], time.Now())
	}
}

// feed parses data (a chunk of the byte stream) into frames.
func (c *wsConn) feed(data []byte, at time.Time) {
	if len(c.rbuf) > 0 {
		c.rbuf = append(c.rbuf, data...)
		data = c.rbuf
	}
	for !c.closed.Load() {
		if len(data) < 2 {
			break
		}
		b0, b1 := data[0], data[1]
		fin, op := b0&0x80 != 0, b0&0x0F
		masked := b1&0x80 != 0
		hl, plen := 2, uint64(b1&0x7F)
		switch plen {
		case 126:
			if len(data) < 4 {
				goto partial
			}
			plen, hl = uint64(binary.BigEndian.Uint16(data[2:])), 4
		case 127:
			if len(data) < 10 {
				goto partial
			}
			plen, hl = binary.BigEndian.Uint64(data[2:]), 10
		}
		if plen > maxFrame {
			c.close("protocol_error")
			return
		}
		var key []byte
		if masked {
			if len(data) < hl+4 {
				goto partial
			}
			key, hl = data[hl:hl+4], hl+4
		}
		if uint64(len(data)-hl) < plen {
			goto partial
		}
		payload := data[hl : hl+int(plen)]
		if masked {
			for i := range payload {
				payload[i] ^= key[i&3]
			}
		}
		data = data[hl+int(plen):]
		c.frame(fin, op, payload, at)
	}
	if len(data) == 0 || c.closed.Load() {
		if cap(c.rbuf) > 4096 {
			c.rbuf = nil
		} else {
			c.rbuf = c.rbuf[:0]
		}
		return
	}
partial:
	// Keep the incomplete frame; data may alias rbuf, which append handles.
	c.rbuf = append(c.rbuf[:0], data...)
}

func (c *wsConn) frame(fin bool, op byte, payload []byte, at time.Time) {
	switch op {
	case opText, opBinary:
		if fin {
			c.h.onMessage(c, payload, at)
			return
		}
		c.msg, c.msgOn = append(c.msg[:0], payload...), true
	case opContinuation:
		if !c.msgOn {
			c.close("protocol_error")
			return
		}
		if len(c.msg)+len(payload) > maxFrame {
			c.close("protocol_error")
			return
		}
		c.msg = append(c.msg, payload...)
		if fin {
			c.h.onMessage(c, c.msg, at)
			c.msgOn = false
			if cap(c.msg) > 4096 {
				c.msg = nil
			} else {
				c.msg = c.msg[:0]
			}
		}
	case opPing:
		if err := c.writeFrame(opPong, payload); err != nil {
			c.close("write_error")
		}
	case opPong:
	case opClose:
		code := 1005
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
		// Echo the code, as the protocol asks, then close the socket.
		var echo []byte
		if len(payload) >= 2 {
			echo = payload[:2]
		}
		_ = c.writeFrame(opClose, echo)
		c.close(fmt.Sprintf("close_%d", code))
	default:
		c.close("protocol_error")
	}
}

// close closes the socket and tells the handler why.
func (c *wsConn) close(reason string) { c.shutdown(reason, true) }

// closeQuiet sends a normal close frame and closes without telling the
// handler: the end of the run.
func (c *wsConn) closeQuiet() {
	if !c.closed.Load() {
		_ = c.writeFrameTimeout(opClose, []byte{0x03, 0xE8}, 100*time.Millisecond) // 1000
	}
	c.shutdown("", false)
}

func (c *wsConn) shutdown(reason string, notify bool) {
	c.once.Do(func() {
		c.closed.Store(true)
		// Leave the poller before the descriptor can be reused.
		if p := c.p; p != nil {
			p.remove(c)
		}
		_ = c.nc.Close()
		if notify {
			c.h.onClosed(c, reason)
		}
	})
}
