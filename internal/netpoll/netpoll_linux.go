package netpoll

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// Poller is one epoll instance and the goroutine waiting on it.
type Poller struct {
	epfd    int
	oneshot bool

	mu       sync.Mutex
	handlers map[int]Handler

	stop chan struct{}
	done chan struct{}
}

// New starts a poller. With oneshot, a socket reported readable is not
// reported again until Rearm: whoever reads it owns it until then, so two
// goroutines never read one socket. Without, a socket is reported for as
// long as it has unread data (level-triggered).
func New(oneshot bool) (*Poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &Poller{epfd: fd, oneshot: oneshot, handlers: map[int]Handler{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *Poller) events() uint32 {
	ev := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	if p.oneshot {
		ev |= unix.EPOLLONESHOT
	}
	return ev
}

// Add starts watching fd for h.
func (p *Poller) Add(fd int, h Handler) error {
	p.mu.Lock()
	p.handlers[fd] = h
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: p.events(), Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		if p.handlers[fd] == h {
			delete(p.handlers, fd)
		}
		p.mu.Unlock()
		return err
	}
	return nil
}

// Rearm reports fd again once it is readable (oneshot pollers).
func (p *Poller) Rearm(fd int) error {
	ev := unix.EpollEvent{Events: p.events(), Fd: int32(fd)}
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// Remove stops watching fd if h still owns it. Call it before the socket is
// closed: a closed descriptor's number is soon another socket's.
func (p *Poller) Remove(fd int, h Handler) {
	p.mu.Lock()
	owned := p.handlers[fd] == h
	if owned {
		delete(p.handlers, fd)
	}
	p.mu.Unlock()
	if owned {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// Len is the number of sockets watched.
func (p *Poller) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.handlers)
}

func (p *Poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		// A bounded wait, so Close is noticed without a wake-up descriptor.
		n, err := unix.EpollWait(p.epfd, events, 100)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := range n {
			p.mu.Lock()
			h := p.handlers[int(events[i].Fd)]
			p.mu.Unlock()
			// An event can still reach a descriptor removed and reused
			// meanwhile: handlers must take a spurious Ready calmly.
			if h != nil {
				h.Ready()
			}
		}
	}
}

// Close stops the poller; its sockets are not closed.
func (p *Poller) Close() error {
	select {
	case <-p.stop:
		return nil
	default:
	}
	close(p.stop)
	<-p.done
	return unix.Close(p.epfd)
}
