package gateway

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/testinfra"
)

// The writer's interleavings (writer.go), forced on a real TCP connection:
// a full socket buffer (a client that does not read, with small buffers on
// both ends) makes the kernel take part of a frame, and a RawConn wrapper
// runs a step in the middle of an inline write.

type writerOwner struct{ done chan string }

func (o *writerOwner) handleMessage(int, []byte) {}
func (o *writerOwner) tick() bool                { return true }
func (o *writerOwner) nextTick() time.Duration   { return 0 }
func (o *writerOwner) written(string)            {}
func (o *writerOwner) finished(r string)         { o.done <- r }

// hookedRawConn runs before and after around each inline write.
type hookedRawConn struct {
	syscall.RawConn
	before, after func()
}

func (h hookedRawConn) Write(f func(uintptr) bool) error {
	if h.before != nil {
		h.before()
	}
	err := h.RawConn.Write(f)
	if h.after != nil {
		h.after()
	}
	return err
}

type writerRig struct {
	s      *socket
	owner  *writerOwner
	client *websocket.Conn
	starts *atomic.Int32 // writer goroutines started
}

// newWriterRig connects a client to an attached socket. small gives both
// ends the smallest buffers the kernel allows, so a large frame fills them;
// writeTimeout 0 keeps the shipped WS_WRITE_TIMEOUT.
func newWriterRig(t testing.TB, small bool, writeTimeout time.Duration) *writerRig {
	t.Helper()
	starts := &atomic.Int32{}
	writerStarted = func() { starts.Add(1) }

	upgraded := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		upgraded <- ws
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if !small {
			return nil
		}
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1) })
	}}).DialContext}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := <-upgraded
	if small {
		_ = ws.NetConn().(*net.TCPConn).SetWriteBuffer(1)
	}
	// The shipped settings (WS_*), but WS_WRITE_TIMEOUT where a test says
	// why it needs another.
	cfg := &Config{}
	if err := config.LoadFrom(cfg, map[string]string{"AUTH_SECRET": strings.Repeat("s", 32)}); err != nil {
		t.Fatal(err)
	}
	if writeTimeout > 0 {
		cfg.WriteTimeout = writeTimeout
	}
	owner := &writerOwner{done: make(chan string, 1)}
	s := newSocket(cfg, newMetrics(prometheus.NewRegistry(), func() float64 { return 0 }, 1), nil, owner)
	s.attach(ws, nil)
	s.startReading() // a reader goroutine (no poller): it finishes the socket once closed
	t.Cleanup(func() {
		// The socket's last writer runs before the seam is taken away.
		_ = client.Close()
		select {
		case <-s.closed:
		case <-time.After(10 * time.Second):
			t.Error("the socket did not close after its client")
		}
		writerStarted = nil
	})
	return &writerRig{s: &s, owner: owner, client: client, starts: starts}
}

func textOut(p []byte) outFrame { return outFrame{typ: protocol.TypeAck, data: p} }

func (r *writerRig) read(t *testing.T) (int, []byte) {
	t.Helper()
	_ = r.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, p, err := r.client.ReadMessage()
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	return mt, p
}

// writerIdle waits until no writer owns the socket.
func (r *writerRig) writerIdle(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.s.qmu.Lock()
		w := r.s.writing
		r.s.qmu.Unlock()
		if !w {
			return
		}
	}
	t.Fatal("the writer never finished")
}

// A frame queued while nothing else is goes out on the caller's goroutine:
// no writer goroutine is started for it.
func TestInlineWriteStartsNoGoroutine(t *testing.T) {
	r := newWriterRig(t, false, 0)
	for i, want := range []string{"one", "two", "three"} {
		r.s.enqueue(textOut([]byte(want)), true)
		if _, p := r.read(t); string(p) != want {
			t.Fatalf("frame %d: %q, want %q", i, p, want)
		}
	}
	if n := r.starts.Load(); n != 0 {
		t.Errorf("%d writer goroutines started for three frames written inline", n)
	}
}

// The kernel takes part of a frame: its rest goes to a writer goroutine and
// leaves before the frames queued meanwhile and the pong for a ping read
// meanwhile.
func TestHalfWrittenFrameLeavesFirst(t *testing.T) {
	r := newWriterRig(t, true, 0)
	big := bytes.Repeat([]byte("x"), 1<<20)
	// Queued while the kernel takes its part of the big frame.
	r.s.rc = hookedRawConn{RawConn: r.s.rc, after: func() {
		r.s.enqueue(outFrame{control: websocket.PongMessage, data: []byte("p")}, false) // as readFrame queues it
		r.s.enqueue(textOut([]byte("after")), true)
	}}
	r.s.enqueue(textOut(big), true)
	if n := r.starts.Load(); n != 1 {
		t.Fatalf("a frame larger than the socket buffers: %d writers started, want 1 for its rest", n)
	}
	pong := make(chan string, 1)
	r.client.SetPongHandler(func(s string) error { pong <- s; return nil })
	if _, p := r.read(t); !bytes.Equal(p, big) {
		t.Fatalf("the first frame (%d bytes) is not the big frame whole: frames passed its rest", len(p))
	}
	select {
	case <-pong:
		t.Fatal("the pong came before the rest of the frame")
	default:
	}
	if _, p := r.read(t); string(p) != "after" {
		t.Fatalf("second frame %q, want %q", p, "after")
	}
	select {
	case got := <-pong:
		if got != "p" {
			t.Fatalf("pong %q", got)
		}
	default:
		t.Fatal("no pong between the frames")
	}
}

// The socket terminates while a caller writes inline: the frame, whole,
// comes before the close frame, which the writer started afterwards sends.
func TestTerminateDuringInlineWrite(t *testing.T) {
	r := newWriterRig(t, false, 0)
	r.s.rc = hookedRawConn{RawConn: r.s.rc, before: func() { r.s.terminate(&protocol.Shutdown) }}
	r.s.enqueue(textOut([]byte("last")), true)
	if _, p := r.read(t); string(p) != "last" {
		t.Fatalf("frame %q", p)
	}
	_, _, err := r.client.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.Shutdown.Code {
		t.Fatalf("after the frame: %v, want a close frame with %d", err, protocol.Shutdown.Code)
	}
	if reason := <-r.owner.done; reason != protocol.Shutdown.Reason {
		t.Errorf("finished with %q", reason)
	}
}

// A frame left half written by a socket that terminates is not followed by
// a close frame (the client would read it as the frame's rest): the bytes
// after the frame's header are the frame's own, up to the end of the stream.
func TestHalfWrittenFrameGetsNoCloseFrame(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(r *writerRig)
	}{
		// Terminated between the inline write and its bookkeeping: the
		// rest is dropped.
		{"terminate during the inline write", func(r *writerRig) {
			r.s.rc = hookedRawConn{RawConn: r.s.rc, after: func() { r.s.terminate(&protocol.Shutdown) }}
		}},
		// Aborted while the writer goroutine waits to write the rest: the
		// deadline fails the write.
		{"abort while the rest waits", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWriterRig(t, true, 0)
			if tc.stop != nil {
				tc.stop(r)
			}
			r.s.enqueue(textOut(bytes.Repeat([]byte("x"), 1<<20)), true)
			if tc.stop == nil {
				r.s.abort()
			}
			if reason := <-r.owner.done; reason != protocol.Shutdown.Reason {
				t.Errorf("finished with %q", reason)
			}
			_ = r.client.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(r.client.NetConn())
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatal(err)
			}
			if len(got) < 10 || len(got) >= 10+1<<20 {
				t.Fatalf("the client read %d bytes; want part of a frame", len(got))
			}
			if i := bytes.IndexFunc(got[10:], func(c rune) bool { return c != 'x' }); i >= 0 {
				t.Fatalf("byte %d after the frame's header is %#x: something followed the half frame", i, got[10+i])
			}
		})
	}
}

// The writer goroutine writes with a deadline; an inline write after that
// deadline has passed must not fail on it.
func TestInlineWriteAfterAWriterDeadline(t *testing.T) {
	// A short WS_WRITE_TIMEOUT, so the writer's deadline passes within the
	// test instead of after the shipped 10 s.
	r := newWriterRig(t, false, 50*time.Millisecond)
	r.s.enqueue(outFrame{control: websocket.PingMessage}, false) // written by a writer, with a deadline
	r.writerIdle(t)
	time.Sleep(100 * time.Millisecond) // the deadline is past
	r.s.enqueue(textOut([]byte("late")), true)
	pinged := make(chan struct{}, 1)
	r.client.SetPingHandler(func(string) error { pinged <- struct{}{}; return nil })
	if _, p := r.read(t); string(p) != "late" {
		t.Fatalf("frame %q", p)
	}
	select {
	case <-pinged:
	default:
		t.Error("no ping before the frame")
	}
	select {
	case reason := <-r.owner.done:
		t.Fatalf("the socket closed (%s)", reason)
	default:
	}
}

// BenchmarkSocketSend is one frame (an ack's size) from enqueue to the
// client's read, as a produce callback sends an ack: written inline, or by a
// writer goroutine (the socket without its RawConn, as before inline
// writes). busy keeps another P running, as a loaded gateway's other work
// does. cpu-ns/op is the process's CPU time (every thread's) per frame.
func BenchmarkSocketSend(b *testing.B) {
	for _, path := range []string{"inline", "goroutine"} {
		for _, load := range []string{"idle", "busy"} {
			b.Run(path+"/"+load, func(b *testing.B) {
				r := newWriterRig(b, false, 0)
				if path == "goroutine" {
					r.s.rc = nil
				}
				if load == "busy" {
					defer testinfra.KeepAPBusy()()
				}
				sendFrames(b, r)
			})
		}
	}
}

func sendFrames(b *testing.B, r *writerRig) {
	payload := bytes.Repeat([]byte("a"), 200)
	buf := make([]byte, 4+len(payload)) // a 2-byte header and a 2-byte length
	nc := r.client.NetConn()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := testinfra.ProcessCPU(b)
	for range b.N {
		r.s.enqueue(textOut(payload), true)
		if _, err := io.ReadFull(nc, buf); err != nil {
			select {
			case reason := <-r.owner.done:
				b.Fatalf("%v: the socket closed: %s", err, reason)
			default:
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(testinfra.ProcessCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
}
