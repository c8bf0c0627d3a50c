package loadgen

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// poller waits for readable sockets with epoll (level-triggered) and reads
// them on its own goroutine, so an idle socket costs no goroutine and no
// buffer. The sockets stay ordinary *net.TCPConn for writes and close; reads
// go through RawConn.Read, which keeps the descriptor alive during the read.
type poller struct {
	epfd int
	buf  []byte

	mu    sync.Mutex
	conns map[int]*wsConn

	stop chan struct{}
	done chan struct{}
}

func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: fd, buf: make([]byte, 64<<10), conns: map[int]*wsConn{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// add registers c; from now on only this poller reads it.
func (p *poller) add(c *wsConn) error {
	c.p = p
	p.mu.Lock()
	p.conns[c.fd] = c
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.mu.Lock()
		delete(p.conns, c.fd)
		p.mu.Unlock()
		c.p = nil
		return err
	}
	return nil
}

// remove unregisters c; called before its descriptor is closed.
func (p *poller) remove(c *wsConn) {
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		n, err := unix.EpollWait(p.epfd, events, 100)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := range n {
			p.mu.Lock()
			c := p.conns[int(events[i].Fd)]
			p.mu.Unlock()
			// A stale event for a descriptor closed and reused meanwhile
			// reaches the new socket, whose read then finds nothing.
			if c != nil {
				c.readable(p.buf)
			}
		}
	}
}

// close stops the poller; its sockets must be closed already.
func (p *poller) close() {
	close(p.stop)
	<-p.done
	_ = unix.Close(p.epfd)
}
