package kafka

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func startBroker(t *testing.T, partitions int32, topics ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func produceN(t *testing.T, brokers []string, topic string, users, perUser int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := 0; i < perUser; i++ {
		for u := 0; u < users; u++ {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("u" + strconv.Itoa(u)), Value: []byte(strconv.Itoa(i))})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func committed(t *testing.T, brokers []string, group, topic string) (done, end int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	offs.Each(func(o kadm.OffsetResponse) { done += o.At })
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	return done, end
}

func newTestConsumer(t *testing.T, brokers []string, group string, h Handler, maxInFlight int) *Consumer {
	t.Helper()
	c, err := NewConsumer(ConsumerConfig{
		Client: ClientConfig{Brokers: brokers}, Group: group, Topics: []string{"t"},
		MaxInFlight: maxInFlight, DrainTimeout: 2 * time.Second, CommitInterval: 100 * time.Millisecond,
	}, h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Users are processed concurrently, each user in order, and every offset is
// committed at the end.
func TestConsumerPerUserOrderAndConcurrency(t *testing.T) {
	const users, perUser = 40, 25
	brokers := startBroker(t, 4, "t")
	produceN(t, brokers, "t", users, perUser)

	var mu sync.Mutex
	next := map[string]int{}
	var inFlight, maxSeen, total atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := func(ctx context.Context, r *kgo.Record) error {
		n := inFlight.Add(1)
		for {
			m := maxSeen.Load()
			if n <= m || maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		inFlight.Add(-1)
		v, _ := strconv.Atoi(string(r.Value))
		mu.Lock()
		defer mu.Unlock()
		if want := next[string(r.Key)]; v != want {
			return fmt.Errorf("user %s: got message %d, want %d", r.Key, v, want)
		}
		next[string(r.Key)]++
		if total.Add(1) == users*perUser {
			cancel()
		}
		return nil
	}
	c := newTestConsumer(t, brokers, "g1", h, 64)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out after %d records", total.Load())
	}
	if total.Load() != users*perUser {
		t.Fatalf("processed %d", total.Load())
	}
	if maxSeen.Load() < 4 {
		t.Fatalf("records were not processed concurrently (max in flight %d)", maxSeen.Load())
	}
	done, end := committed(t, brokers, "g1", "t")
	if done != end {
		t.Fatalf("committed %d of %d", done, end)
	}
}

// A record that never finishes holds its partition's commit point while the
// other users go on; after a restart it is delivered again.
func TestConsumerDoesNotCommitPastUnfinishedRecord(t *testing.T) {
	brokers := startBroker(t, 1, "t")
	produceN(t, brokers, "t", 5, 4) // 20 records, one partition, u0..u4 interleaved

	var processed atomic.Int64
	stuck := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	h := func(ctx context.Context, r *kgo.Record) error {
		if string(r.Key) == "u2" && string(r.Value) == "1" { // offset 7
			close(stuck)
			<-ctx.Done()
			return ctx.Err()
		}
		processed.Add(1)
		return nil
	}
	c := newTestConsumer(t, brokers, "g2", h, 16)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	<-stuck
	deadline := time.Now().Add(10 * time.Second)
	for processed.Load() < 17 && time.Now().Before(deadline) { // all but u2's records 1..3
		time.Sleep(10 * time.Millisecond)
	}
	if got := processed.Load(); got != 17 {
		t.Fatalf("other users blocked: processed %d, want 17", got)
	}
	time.Sleep(200 * time.Millisecond) // let commits happen
	cancel()
	<-errc
	done, _ := committed(t, brokers, "g2", "t")
	if done != 7 {
		t.Fatalf("committed offset %d, want 7 (the stuck record)", done)
	}

	// A new member of the group resumes at the stuck record.
	var first atomic.Int64
	first.Store(1 << 62)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	h2 := func(ctx context.Context, r *kgo.Record) error {
		for {
			m := first.Load()
			if r.Offset >= m || first.CompareAndSwap(m, r.Offset) {
				break
			}
		}
		if processed.Add(1) == 17+13 {
			cancel2()
		}
		return nil
	}
	c2 := newTestConsumer(t, brokers, "g2", h2, 16)
	go func() { errc <- c2.Run(ctx2) }()
	select {
	case <-errc:
	case <-time.After(20 * time.Second):
		t.Fatal("restart did not reprocess")
	}
	if first.Load() != 7 {
		t.Fatalf("restart began at %v, want 7", first.Load())
	}
	if done, end := committed(t, brokers, "g2", "t"); done != end {
		t.Fatalf("after restart committed %d of %d", done, end)
	}
}

// Lag keeps being reported while every handler is stuck and polling paused.
func TestForgottenPartitionStopsItsWork(t *testing.T) {
	brokers := startBroker(t, 1, "t")
	started, stopped := make(chan struct{}), make(chan error, 1)
	c := newTestConsumer(t, brokers, "g-forget", func(ctx context.Context, _ *kgo.Record) error {
		close(started)
		<-ctx.Done()
		stopped <- ctx.Err()
		return ctx.Err()
	}, 4)
	t.Cleanup(func() { c.stopWork(); c.cl.Close() })
	ctx := context.Background()
	// The callbacks are called by hand on a topic the group does not
	// consume: the client joins the group for "t" on its own, and its real
	// assignment of t/0, landing between these calls, replaced the state
	// the handler runs under (the lost call then cancelled the new one).
	const topic = "not-consumed"
	c.assigned(ctx, nil, map[string][]int32{topic: {0}})
	c.dispatch(ctx, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("u1"), Offset: 0})
	<-started
	c.lost(ctx, nil, map[string][]int32{topic: {0}})
	select {
	case err := <-stopped:
		if err == nil {
			t.Fatal("handler context not cancelled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler still works on a partition this member lost")
	}
}
