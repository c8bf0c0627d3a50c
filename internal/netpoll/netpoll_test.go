package netpoll

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

type readyFunc func()

func (f readyFunc) Ready() { f() }

func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

func expect(t *testing.T, ch <-chan struct{}, want bool, what string) {
	t.Helper()
	select {
	case <-ch:
		if !want {
			t.Fatalf("%s: reported, want not", what)
		}
	case <-time.After(300 * time.Millisecond):
		if want {
			t.Fatalf("%s: not reported", what)
		}
	}
}

// watched is a connected socket pair whose server end p watches; ready
// gets a value for each Ready.
type watched struct {
	p              *Poller
	client, server net.Conn
	fd             int
	h              *readyFunc
	ready          chan struct{}
}

func watch(t *testing.T, oneshot bool) watched {
	t.Helper()
	p, err := New(oneshot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	w := watched{p: p, ready: make(chan struct{}, 1000)}
	w.client, w.server = tcpPair(t)
	if w.fd, err = FD(w.server); err != nil {
		t.Fatal(err)
	}
	h := readyFunc(func() { w.ready <- struct{}{} })
	w.h = &h
	if err := p.Add(w.fd, w.h); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestOneshot(t *testing.T) {
	w := watch(t, true)
	p, client, server, fd, ready, h := w.p, w.client, w.server, w.fd, w.ready, w.h
	expect(t, ready, false, "idle socket")

	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	expect(t, ready, true, "data")
	expect(t, ready, false, "unread data before Rearm (oneshot)")
	if err := p.Rearm(fd); err != nil {
		t.Fatal(err)
	}
	expect(t, ready, true, "unread data after Rearm")
	buf := make([]byte, 8)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	if err := p.Rearm(fd); err != nil {
		t.Fatal(err)
	}
	expect(t, ready, false, "everything read")

	other := readyFunc(func() {})
	p.Remove(fd, &other) // not its owner: no effect
	if p.Len() != 1 {
		t.Fatalf("Len %d after a stranger's Remove", p.Len())
	}
	p.Remove(fd, h)
	if p.Len() != 0 {
		t.Fatalf("Len %d after Remove", p.Len())
	}
	if _, err := client.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	expect(t, ready, false, "removed socket")
}

func TestLevelTriggeredAndHangUp(t *testing.T) {
	w := watch(t, false)
	_ = w.client.Close() // a hang-up is reported like data
	expect(t, w.ready, true, "hang-up")
	expect(t, w.ready, true, "hang-up still pending (level-triggered)")
}

func TestFDNeedsASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := FD(a); err == nil {
		t.Fatal("FD of a pipe end without a descriptor: want an error")
	}
}

// TestIdlePollersHoldNoThreads: a poller waits parked in the runtime's
// poller, not in a blocking epoll_wait, which would hold an OS thread per
// poller (and cost two thread wake-ups per report; netpoll_linux.go).
func TestIdlePollersHoldNoThreads(t *testing.T) {
	const pollers = 64
	before := osThreads(t)
	for range pollers {
		watch(t, true)
	}
	time.Sleep(50 * time.Millisecond) // every poller's goroutine is waiting by now
	if after := osThreads(t); after-before >= pollers/2 {
		t.Fatalf("%d idle pollers: OS threads %d → %d, want no thread per poller", pollers, before, after)
	}
}

// osThreads is the process's thread count.
func osThreads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}
