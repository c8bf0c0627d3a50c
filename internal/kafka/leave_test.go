package kafka

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// staticSession is long enough that anything these tests see happen within
// a few seconds did not wait for a session to time out.
const staticSession = 20 * time.Second

// runningConsumer is a static member consuming topic "t" of group "g".
type runningConsumer struct {
	*Consumer
	cancel context.CancelFunc
	done   chan error
}

func startStatic(t *testing.T, brokers []string, instance string, fenced *prometheus.CounterVec) *runningConsumer {
	t.Helper()
	c, err := NewConsumer(ConsumerConfig{
		Client: ClientConfig{Brokers: brokers}, Group: "g", Topics: []string{"t"},
		DrainTimeout: 2 * time.Second, CommitInterval: 100 * time.Millisecond,
		SessionTimeout: staticSession, InstanceID: instance, Fenced: fenced,
	}, func(context.Context, *kgo.Record) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningConsumer{Consumer: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	t.Cleanup(func() { rc.stop(t) })
	return rc
}

// stop ends Run (an orderly stop) and waits for it.
func (rc *runningConsumer) stop(t *testing.T) {
	t.Helper()
	rc.cancel()
	select {
	case <-rc.done:
	case <-time.After(15 * time.Second):
		t.Fatal("consumer did not stop")
	}
	rc.done <- nil // a second stop returns at once
}

func (c *Consumer) owned() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.parts)
}

// waitOwned waits until c owns n partitions and says how long it took.
func waitOwned(t *testing.T, c *Consumer, n int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if c.owned() == n {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("consumer %s owns %d partitions after %s, want %d", c.cfg.InstanceID, c.owned(), within, n)
	return 0
}

// startPair runs static members a and b on a broker of their own, with
// two of the topic's four partitions each.
func startPair(t *testing.T) (brokers []string, a, b *runningConsumer) {
	t.Helper()
	brokers = startBroker(t, 4, "t")
	a = startStatic(t, brokers, "a", nil)
	waitOwned(t, a.Consumer, 4, 10*time.Second)
	b = startStatic(t, brokers, "b", nil)
	waitOwned(t, b.Consumer, 2, 10*time.Second)
	waitOwned(t, a.Consumer, 2, 10*time.Second)
	return brokers, a, b
}

// A static member that crashes stays in the group: its restart with the
// same instance id gets the partitions back at once, while the other member
// never sees them.
func TestStaticMemberRestartTakesPartitionsBack(t *testing.T) {
	brokers, a, b := startPair(t)

	// A crash: the client goes away without a word to the group (Close
	// sends no LeaveGroup for a static member); Run then fails to leave.
	a.Client().Close()
	a.stop(t)
	time.Sleep(2 * time.Second) // the restart policy's pause
	if n := b.owned(); n != 2 {
		t.Fatalf("while a is down, b owns %d partitions, want its own 2 (a kept its place)", n)
	}
	a2 := startStatic(t, brokers, "a", nil)
	took := waitOwned(t, a2.Consumer, 2, staticSession/2)
	t.Logf("the restart owned its partitions again %s after it started", took)
}

// A static member stopped in order (SIGTERM: maybe for good) leaves: the
// other member takes its partitions within a heartbeat or two, not after
// the session timeout.
func TestStaticMemberLeavesWhenStopped(t *testing.T) {
	_, a, b := startPair(t)

	a.stop(t)
	took := waitOwned(t, b.Consumer, 4, staticSession/2)
	t.Logf("b owned every partition %s after a stopped", took)
}

// A second instance with the same instance id fences the first, which is
// loud about it: an error from Fenced (readiness) and the counter.
func TestFencedStaticMemberIsLoud(t *testing.T) {
	brokers := startBroker(t, 2, "t")
	fenced := NewFencedCounter(prometheus.NewRegistry())
	first := startStatic(t, brokers, "same", fenced)
	waitOwned(t, first.Consumer, 2, 10*time.Second)
	if err := first.Fenced(); err != nil {
		t.Fatalf("Fenced before any duplicate: %v", err)
	}
	second := startStatic(t, brokers, "same", nil)
	waitOwned(t, second.Consumer, 2, 10*time.Second)

	deadline := time.Now().Add(staticSession / 2)
	for first.Fenced() == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	err := first.Fenced()
	if err == nil || !strings.Contains(err.Error(), "INSTANCE_ID") {
		t.Fatalf("Fenced after a duplicate joined: %v, want an error naming INSTANCE_ID", err)
	}
	if n := testutil.ToFloat64(fenced.WithLabelValues("g")); n < 1 {
		t.Fatalf("fenced counter %v, want at least 1", n)
	}
	if err := second.Fenced(); err != nil {
		t.Fatalf("the newer member reports %v", err)
	}
}
