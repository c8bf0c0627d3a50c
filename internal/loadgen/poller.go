package loadgen

import (
	"github.com/chatrelay/chat/internal/netpoll"
)

// poller reads the sockets that epoll (level-triggered) reports readable,
// inline on the poller's goroutine, so an idle socket costs no goroutine and
// no buffer. The sockets stay ordinary *net.TCPConn for writes and close;
// reads go through RawConn.Read, which keeps the descriptor alive during the
// read.
type poller struct {
	np  *netpoll.Poller
	buf []byte // scratch for reads; only the poller's goroutine uses it
}

func newPoller() (*poller, error) {
	np, err := netpoll.New(false)
	if err != nil {
		return nil, err
	}
	return &poller{np: np, buf: make([]byte, 64<<10)}, nil
}

// polledConn is what the poller is told is readable: c, read with the
// poller's buffer.
type polledConn struct {
	c *wsConn
	p *poller
}

// Ready reads c. A stale event for a descriptor closed and reused meanwhile
// reaches the new socket, whose read then finds nothing.
func (pc *polledConn) Ready() { pc.c.readable(pc.p.buf) }

// add registers c; from now on only this poller reads it.
func (p *poller) add(c *wsConn) error {
	pc := &polledConn{c: c, p: p}
	c.p, c.pc = p, pc
	if err := p.np.Add(c.fd, pc); err != nil {
		c.p, c.pc = nil, nil
		return err
	}
	return nil
}

// remove unregisters c; called before its descriptor is closed.
func (p *poller) remove(c *wsConn) { p.np.Remove(c.fd, c.pc) }

// close stops the poller; its sockets must be closed already.
func (p *poller) close() { _ = p.np.Close() }
