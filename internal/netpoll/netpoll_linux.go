package netpoll

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller is one epoll instance and the goroutine waiting on it.
//
// The goroutine does not block in epoll_wait: the epoll descriptor is itself
// registered with Go's network poller (an epoll descriptor is readable while
// it has events), and the goroutine parks there like any socket reader, then
// collects the events with a wait that does not block. A blocking epoll_wait
// holds an OS thread per poller in a system call, and in a busy process the
// runtime takes the thread's P away while it waits and must find one for it
// when the call returns: a report waited for other goroutines' turns
// (BenchmarkReportRoundTrip "busy": about 1 ms a round trip, 25 µs now) and
// cost thread wake-ups both ways. In an otherwise idle process the blocking
// wait was a little cheaper (docs/performance.md, "the fourth round").
type Poller struct {
	epfd    int
	file    *os.File        // owns epfd: closing it wakes the goroutine
	rc      syscall.RawConn // file's, for the parked wait
	oneshot bool

	mu       sync.Mutex
	handlers map[int]Handler

	stop chan struct{}
	done chan struct{}

	// Only the poller's goroutine uses these: collect's buffer and results
	// (fields, so the parked wait allocates nothing).
	collect func(fd uintptr) bool
	ready   []unix.EpollEvent
	n       int
	werr    error
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
	// Non-blocking, so os.NewFile registers it with the runtime's poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &Poller{epfd: fd, file: f, rc: rc, oneshot: oneshot, handlers: map[int]Handler{}, stop: make(chan struct{}), done: make(chan struct{}),
		ready: make([]unix.EpollEvent, 256)}
	p.collect = p.collectEvents
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
	for {
		n, err := p.wait()
		if err != nil {
			return // closed, or epoll failed: nothing can be reported any more
		}
		for i := range n {
			p.mu.Lock()
			h := p.handlers[int(p.ready[i].Fd)]
			p.mu.Unlock()
			// An event can still reach a descriptor removed and reused
			// meanwhile: handlers must take a spurious Ready calmly.
			if h != nil {
				h.Ready()
			}
		}
	}
}

// wait returns the next events, parking the goroutine in the runtime's
// poller while there are none. It fails once the poller is closed.
func (p *Poller) wait() (int, error) {
	for {
		if err := p.rc.Read(p.collect); err != nil {
			return 0, err
		}
		switch {
		case errors.Is(p.werr, unix.EINTR):
			continue
		case p.werr != nil:
			return 0, p.werr
		}
		return p.n, nil
	}
}

// collectEvents takes what is ready without blocking; false (nothing
// ready) parks the goroutine until the descriptor is readable. The
// runtime's registration is edge-triggered, but an event that arrives
// between this wait and the park still wakes it.
func (p *Poller) collectEvents(fd uintptr) bool {
	p.n, p.werr = unix.EpollWait(int(fd), p.ready, 0)
	return p.werr != nil || p.n > 0
}

// Close stops the poller; its sockets are not closed.
func (p *Poller) Close() error {
	select {
	case <-p.stop:
		return nil
	default:
	}
	close(p.stop)
	// Closing the file wakes the parked wait; the descriptor itself is
	// released once that wait has returned.
	err := p.file.Close()
	<-p.done
	return err
}
