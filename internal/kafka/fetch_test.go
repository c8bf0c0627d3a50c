package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchingConsumer runs a consumer with the given fetch settings against a
// broker of its own, and returns its first fetch of the topic (as the
// broker received it; the broker then answers as it would) and a stop that
// ends Run and returns what Run returned.
func fetchingConsumer(t *testing.T, minBytes int32, maxWait time.Duration) (*kmsg.FetchRequest, func() <-chan error) {
	t.Helper()
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	fetches := make(chan *kmsg.FetchRequest, 1)
	cl.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if f := req.(*kmsg.FetchRequest); len(f.Topics) > 0 {
			select {
			case fetches <- f:
			default:
			}
		}
		return nil, nil, false
	})
	c, err := NewConsumer(ConsumerConfig{
		Client: ClientConfig{Brokers: cl.ListenAddrs()}, Group: "g", Topics: []string{"t"},
		MaxInFlight: 1, DrainTimeout: time.Second, CommitInterval: 100 * time.Millisecond,
		FetchMinBytes: minBytes, FetchMaxWait: maxWait,
	}, func(context.Context, *kgo.Record) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1) // closed after Run's result, so every reader gets one
	go func() { done <- c.Run(ctx); close(done) }()
	stop := func() <-chan error { cancel(); return done }
	t.Cleanup(func() { <-stop() })
	select {
	case req := <-fetches:
		return req, stop
	case <-time.After(20 * time.Second):
		t.Fatal("no fetch of the topic within 20s")
		return nil, nil
	}
}

// The consumer's fetches ask the broker for what KAFKA_FETCH_MIN_BYTES and
// KAFKA_FETCH_MAX_WAIT say, and for one byte and 50ms when nothing does.
func TestConsumerFetchesWaitAsConfigured(t *testing.T) {
	for _, tc := range []struct {
		name     string
		minBytes int32
		maxWait  time.Duration
		wantMin  int32
		wantWait int32
	}{
		{"default", 0, 0, 1, 50},
		{"configured", 65536, 20 * time.Millisecond, 65536, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := fetchingConsumer(t, tc.minBytes, tc.maxWait)
			if req.MinBytes != tc.wantMin || req.MaxWaitMillis != tc.wantWait {
				t.Errorf("fetch asks for min %d bytes, wait %d ms; want %d, %d", req.MinBytes, req.MaxWaitMillis, tc.wantMin, tc.wantWait)
			}
		})
	}
}

// A fetch waiting at the broker (up to the longest KAFKA_FETCH_MAX_WAIT
// accepted) does not hold up shutdown: Run returns once the fetch is
// abandoned, not when the broker answers it.
func TestConsumerStopsDuringALongFetchWait(t *testing.T) {
	_, stop := fetchingConsumer(t, 1<<20, 30*time.Second)
	select {
	case err := <-stop():
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10s after its context ended, during a 30s fetch wait")
	}
}
