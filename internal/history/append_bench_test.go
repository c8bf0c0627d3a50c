package history

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/redisbatch"
	"github.com/chatrelay/chat/internal/testinfra"
)

// BenchmarkAppendPublish is the relay's Redis step from many lanes at once
// (RunParallel with 64 goroutines per core, as the relay's in-flight
// records are): one script call per answer sent alone ("direct", as before
// redisbatch) or in shared pipelines ("batched", what Store does). The
// CPU time per append is reported for both sides: this process (client
// µs/op, from getrusage) and redis-server (server µs/op, from INFO cpu).
func BenchmarkAppendPublish(b *testing.B) {
	rdb := startRedis(b)
	cfg := Config{MaxLen: 200, TTL: time.Hour}
	benchDirectAndBatched(b, rdb, func(mode string, batch redisbatch.Pipeliner) func(ctx context.Context, i int) error {
		s := New(rdb, cfg)
		if batch != nil {
			s.batch = batch
		}
		payload := []byte(`{"cursor":"PLACEHOLDER","content":"x"}`)
		return func(ctx context.Context, i int) error {
			a := answer(fmt.Sprintf("bench-%s-%d", mode, i%500), i)
			_, err := s.AppendPublish(ctx, a, "live", payload, "PLACEHOLDER")
			return err
		}
	})
}

// BenchmarkAnswerLookupAndStore is the ai-consumer's Redis steps for one
// message from many lanes at once: the stored-answer check with the
// conversation memory, then storing the answer; each alone ("direct") or
// in shared pipelines ("batched", what Answers does).
func BenchmarkAnswerLookupAndStore(b *testing.B) {
	rdb := startRedis(b)
	benchDirectAndBatched(b, rdb, func(mode string, batch redisbatch.Pipeliner) func(ctx context.Context, i int) error {
		a := NewAnswers(rdb, time.Hour)
		if batch != nil {
			a.batch = batch
		}
		return func(ctx context.Context, i int) error {
			ans := answer(fmt.Sprintf("bench-%s-%d", mode, i%500), i)
			if _, _, err := a.GetWithRecent(ctx, ans.UserID, ans.ReplyTo, 20); err != nil {
				return err
			}
			_, err := a.Put(ctx, ans)
			return err
		}
	})
}

// benchDirectAndBatched runs op from 64 goroutines per core, once with the
// store's calls sent alone ("direct": setup gets rdb as its batch) and once
// batched (setup gets nil: the store's own batcher), reporting both sides'
// CPU per op. The "idle_" runs make one call at a time, as an idle system
// does: what the batcher costs when there is nothing to batch.
func benchDirectAndBatched(b *testing.B, rdb redis.UniversalClient, setup func(mode string, batch redisbatch.Pipeliner) func(ctx context.Context, i int) error) {
	for _, mode := range []string{"direct", "batched", "idle_direct", "idle_batched"} {
		b.Run(mode, func(b *testing.B) {
			var batch redisbatch.Pipeliner
			if strings.HasSuffix(mode, "direct") {
				batch = rdb
			}
			op := setup(mode, batch)
			var n atomic.Int64
			b.SetParallelism(64)
			b.ReportAllocs()
			cpu0, srv0 := testinfra.ProcessCPU(b), serverCPU(b, rdb)
			b.ResetTimer()
			if strings.HasPrefix(mode, "idle_") {
				ctx := context.Background()
				for i := 0; b.Loop(); i++ {
					if err := op(ctx, i); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					ctx := context.Background()
					for pb.Next() {
						if err := op(ctx, int(n.Add(1))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric((testinfra.ProcessCPU(b)-cpu0).Seconds()*1e6/float64(b.N), "client-µs/op")
			b.ReportMetric((serverCPU(b, rdb)-srv0).Seconds()*1e6/float64(b.N), "server-µs/op")
		})
	}
}

// serverCPU is redis-server's user+system CPU time (INFO cpu).
func serverCPU(b *testing.B, rdb redis.UniversalClient) time.Duration {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
