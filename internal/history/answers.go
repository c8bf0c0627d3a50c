package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/redisbatch"
	"github.com/chatrelay/chat/internal/rediskeys"
)

// Answers stores each message's answer under its message id, so that a
// redelivered message reuses the answer instead of calling the model again
// (which costs money) and keeps its response id.
type Answers struct {
	rdb redis.UniversalClient
	// batch carries the lookups and stores of every lane: concurrent ones
	// share pipelines (redisbatch).
	batch redisbatch.Pipeliner
	ttl   time.Duration
}

// NewAnswers keeps answers for ttl (longer than any redelivery can take).
func NewAnswers(rdb redis.UniversalClient, ttl time.Duration) *Answers {
	return &Answers{rdb: rdb, batch: redisbatch.New(rdb, redisbatch.Defaults), ttl: ttl}
}

// Get returns the stored answer to messageID, or nil.
func (a *Answers) Get(ctx context.Context, user, messageID string) (*envelope.Envelope, error) {
	b, err := a.rdb.Get(ctx, rediskeys.Answer(user, messageID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("answer lookup: %w", err)
	}
	e, err := envelope.Unmarshal(b)
	if err != nil {
		return nil, nil // a corrupt entry is ignored: the model answers again
	}
	return e, nil
}

// GetWithRecent returns the stored answer to messageID (or nil) and, when
// there is none, the user's latest n history entries as turns, oldest
// first: in one round trip, from the memory list, for a user with a history
// (another one reads the stream: a history older than the list, or n above
// MemoryEntries). recent is nil when n is 0 and when an answer is stored.
func (a *Answers) GetWithRecent(ctx context.Context, user, messageID string, n int64) (*envelope.Envelope, []Turn, error) {
	var get *redis.StringCmd
	var list *redis.StringSliceCmd
	_, err := a.batch.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, rediskeys.Answer(user, messageID))
		if n > 0 && n <= MemoryEntries {
			list = p.LRange(ctx, rediskeys.Memory(user), 0, n-1)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("answer lookup: %w", err)
	}
	if b, err := get.Bytes(); err == nil {
		if e, err := envelope.Unmarshal(b); err == nil {
			return e, nil, nil
		} // a corrupt entry is ignored: the model answers again
	} else if !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("answer lookup: %w", err)
	}
	if n <= 0 {
		return nil, nil, nil
	}
	if list != nil {
		items, err := list.Result()
		if err != nil {
			return nil, nil, fmt.Errorf("memory read for %s: %w", user, err)
		}
		if len(items) > 0 {
			turns := make([]Turn, 0, len(items))
			for i := len(items) - 1; i >= 0; i-- {
				if t, ok := parseTurn(items[i]); ok {
					turns = append(turns, t)
				}
			}
			return nil, turns, nil
		}
	}
	msgs, err := a.rdb.XRevRangeN(ctx, streamKey(user), "+", "-", n).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("history read for %s: %w", user, err)
	}
	return nil, turnsOldestFirst(msgs), nil
}

// Put stores answer unless one is already there, and returns the answer that
// wins: two consumers racing on one message end up producing the same one.
func (a *Answers) Put(ctx context.Context, answer *envelope.Envelope) (*envelope.Envelope, error) {
	stored := *answer
	stored.TraceParent, stored.TraceState = "", ""
	b, err := envelope.Marshal(&stored)
	if err != nil {
		return nil, err
	}
	var setnx *redis.BoolCmd
	_, err = a.batch.Pipelined(ctx, func(p redis.Pipeliner) error {
		setnx = p.SetNX(ctx, rediskeys.Answer(answer.UserID, answer.ReplyTo), b, a.ttl)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("answer store: %w", err)
	}
	if setnx.Val() {
		return answer, nil
	}
	prev, err := a.Get(ctx, answer.UserID, answer.ReplyTo)
	if err != nil || prev == nil {
		return answer, err
	}
	return prev, nil
}
