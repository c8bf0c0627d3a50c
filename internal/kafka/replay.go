package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReplayDLQ sends the records of a dead-letter topic back to the topics they
// came from (the dlq-source-topic header), without the dead-letter headers,
// and commits its progress in group so a second run does not replay them
// again. It stops once it reached the end offsets it saw at start. Run it
// after fixing what made the records fail.
func ReplayDLQ(ctx context.Context, brokers []string, dlqTopic, group string, dryRun bool, progress func(r *kgo.Record, target string)) (int, error) {
	if !strings.HasSuffix(dlqTopic, DLQSuffix) {
		return 0, fmt.Errorf("%q is not a dead-letter topic (no %s suffix)", dlqTopic, DLQSuffix)
	}
	// A dynamic group member, unlike the services' consumers (leave.go): a
	// one-shot command that nothing restarts and that leaves the group on
	// every exit but a crash, and whose runs, with a fixed instance id,
	// would fence each other.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(dlqTopic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return 0, fmt.Errorf("dlq replay client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, dlqTopic)
	if err != nil {
		return 0, fmt.Errorf("dlq end offsets: %w", err)
	}
	done, err := adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		done, err = kadm.OffsetResponses{}, nil // first run: nothing replayed yet
	}
	if err != nil {
		return 0, fmt.Errorf("dlq replay progress: %w", err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		at := int64(0)
		if c, ok := done.Lookup(dlqTopic, o.Partition); ok {
			at = c.At
		}
		if o.Offset > at {
			remaining[o.Partition] = o.Offset
		}
	})
	n := 0
	for len(remaining) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return n, fmt.Errorf("dlq fetch: %w", ferr)
		}
		var out []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset == end-1 {
				delete(remaining, r.Partition)
			}
			target := Header(r, HeaderDLQTopic)
			if target == "" {
				target = strings.TrimSuffix(r.Topic, DLQSuffix)
			}
			rec := &kgo.Record{Topic: target, Key: r.Key, Value: r.Value}
			for _, h := range r.Headers {
				if !strings.HasPrefix(h.Key, "dlq-") {
					rec.Headers = append(rec.Headers, h)
				}
			}
			if progress != nil {
				progress(r, target)
			}
			out = append(out, rec)
		})
		if dryRun {
			n += len(out)
			continue
		}
		if err := cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
			return n, fmt.Errorf("dlq replay produce: %w", err)
		}
		n += len(out)
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return n, fmt.Errorf("dlq replay commit: %w", err)
		}
	}
	return n, nil
}
