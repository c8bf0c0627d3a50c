package redisbus

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/testinfra"
)

// TestPubSubCostOnCluster measures what a user channel costs on a Redis
// Cluster of 3 masters + 3 replicas, classic pub/sub (PUBLISH, which the
// cluster broadcasts to every node over its bus) against sharded pub/sub
// (SPUBLISH, which stays on the shard of the user's slot): publishes per
// second from a fixed number of publishers, and the CPU every redis-server
// spent per message (from /proc/<pid>/stat). The subscriber is the hub
// (sharded) or one classic PubSub holding every channel (classic), as a
// gateway would. A measurement, not a check: PUBSUB_COST=1 runs it;
// docs/reliability.md has the table.
//
//	PUBSUB_COST=1 go test -run TestPubSubCostOnCluster -v ./internal/redisbus/
func TestPubSubCostOnCluster(t *testing.T) {
	if os.Getenv("PUBSUB_COST") == "" {
		t.Skip("a measurement: PUBSUB_COST=1 runs it")
	}
	const (
		users      = 1000
		publishers = 16
		duration   = 10 * time.Second
	)
	cl := testinfra.StartRedisCluster(t)
	c, err := NewClient(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	payloads := make([][]byte, users)
	for i := range payloads {
		payloads[i], _ = envelope.Marshal(&envelope.Envelope{Type: envelope.TypeResponse, ID: "01M8FD4DX1TG87EJMED5H7W2KN", ReplyTo: "01M8FD4DX1TG87EJMED5H7W2KM",
			UserID: fmt.Sprintf("user%d", i), Content: strings.Repeat("an answer of a few sentences. ", 12), CorrelationID: "01M8FD4DX1TG87EJMED5H7W2KP", Timestamp: time.Now()})
	}

	type result struct {
		mode              string
		published, recv   int64
		cpu               map[string]time.Duration
		masters, replicas time.Duration
	}
	var results []result
	for _, mode := range []string{"classic", "sharded"} {
		var recv atomic.Int64
		channels := make([]string, users)
		for i := range channels {
			channels[i] = UserChannel(fmt.Sprintf("user%d", i))
		}
		var stop func()
		if mode == "sharded" {
			hub := NewHub(c, slog.New(slog.DiscardHandler))
			hctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- hub.Run(hctx) }()
			for i := range users {
				if _, err := hub.Subscribe(ctx, fmt.Sprintf("user%d", i), countSink{&recv}); err != nil {
					t.Fatal(err)
				}
			}
			stop = func() { cancel(); <-done }
		} else {
			ps := c.Subscribe(ctx, channels...)
			for range users {
				if _, err := ps.Receive(ctx); err != nil {
					t.Fatal(err)
				}
			}
			go func() {
				for range ps.Channel(redis.WithChannelSize(10000)) {
					recv.Add(1)
				}
			}()
			stop = func() { _ = ps.Close() }
		}
		before := redisCPU(t, cl)
		var published atomic.Int64
		deadline := time.Now().Add(duration)
		var wg sync.WaitGroup
		for range publishers {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					i := rand.IntN(users)
					var err error
					if mode == "sharded" {
						err = c.SPublish(ctx, channels[i], payloads[i]).Err()
					} else {
						err = c.Publish(ctx, channels[i], payloads[i]).Err()
					}
					if err != nil {
						t.Error(err)
						return
					}
					published.Add(1)
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Second) // the last messages reach the subscriber
		after := redisCPU(t, cl)
		stop()
		r := result{mode: mode, published: published.Load(), recv: recv.Load(), cpu: map[string]time.Duration{}}
		masters := map[string]bool{}
		for _, m := range cl.Masters() {
			masters[m.Addr()] = true
		}
		for addr, a := range after {
			d := a - before[addr]
			r.cpu[addr] = d
			if masters[addr] {
				r.masters += d
			} else {
				r.replicas += d
			}
		}
		results = append(results, r)
	}
	var b strings.Builder
	b.WriteString("| pub/sub | publishes/s | delivered | Redis CPU per message (all 6 nodes) | masters | replicas |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		n := time.Duration(r.published)
		fmt.Fprintf(&b, "| %s | %.0f | %d of %d | %.1f µs | %.1f µs | %.1f µs |\n", r.mode, float64(r.published)/duration.Seconds(), r.recv, r.published,
			us((r.masters+r.replicas)/n), us(r.masters/n), us(r.replicas/n))
	}
	cl0, sh := results[0], results[1]
	perMsg := func(r result) float64 { return float64(r.masters+r.replicas) / float64(r.published) }
	fmt.Fprintf(&b, "\nsharded/classic: %.2f× the publishes per second, %.2f× the Redis CPU per message\n",
		float64(sh.published)/float64(cl0.published), perMsg(sh)/perMsg(cl0))
	t.Logf("%d users, %d publishers for %s, %d-byte payloads:\n%s", users, publishers, duration, len(payloads[0]), b.String())
}

type countSink struct{ n *atomic.Int64 }

func (s countSink) Deliver(*envelope.Envelope) { s.n.Add(1) }
func (s countSink) Resync()                    {}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// redisCPU reads the CPU time (user + system) each node's redis-server has
// used, from /proc/<pid>/stat.
func redisCPU(t *testing.T, cl *testinfra.RedisCluster) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for addr, pid := range cl.Pids() {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			t.Fatal(err)
		}
		// Fields after the command name (which may hold spaces, in
		// parentheses): utime and stime are the 12th and 13th.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		const ticksPerSecond = 100 // USER_HZ on Linux
		out[addr] = time.Duration(utime+stime) * time.Second / ticksPerSecond
	}
	return out
}
