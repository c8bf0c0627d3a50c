package netpoll

import (
	"testing"

	"github.com/chatrelay/chat/internal/testinfra"
)

// BenchmarkReportRoundTrip is one readiness report's round trip, as a
// gateway socket sees each client message: the client writes, the poller
// reports the server end readable, the reader (on a goroutine of its own,
// as the gateway's) reads, answers and rearms, and the client reads the
// answer. Run with -cpu 2 to see the thread hand-offs a blocking
// epoll_wait costs; cpu-ns/op is the process's CPU time (every thread's,
// the reader's wake-ups included) per round trip.
func BenchmarkReportRoundTrip(b *testing.B) {
	b.Run("idle", func(b *testing.B) { reportRoundTrips(b) })
	// busy: another goroutine keeps a P running, as a loaded gateway's
	// other sockets do; the runtime then takes a P blocked in a system
	// call away sooner. Its CPU is in cpu-ns/op: compare ns/op.
	b.Run("busy", func(b *testing.B) {
		defer testinfra.KeepAPBusy()()
		reportRoundTrips(b)
	})
}

func reportRoundTrips(b *testing.B) {
	p, err := New(true)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	client, server := tcpPair(b)
	fd, err := FD(server)
	if err != nil {
		b.Fatal(err)
	}
	h := readyFunc(func() {
		go func() {
			buf := make([]byte, 64)
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			_, _ = server.Write(buf[:n])
			_ = p.Rearm(fd)
		}()
	})
	if err := p.Add(fd, &h); err != nil {
		b.Fatal(err)
	}
	msg, buf := []byte("message"), make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := testinfra.ProcessCPU(b)
	for range b.N {
		if _, err := client.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := client.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(testinfra.ProcessCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
}
