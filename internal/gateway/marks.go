package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/history"
)

// deliveredMarks batches "answers up to this cursor reached a socket"
// updates per user and writes them every interval in one pipelined round
// trip, so delivery never waits on Redis. A crash loses at most one interval
// of marks: those answers are replayed to a client that reconnects without a
// cursor — at least once, never lost.
type deliveredMarks struct {
	store    *history.Store
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	pending map[string]string
}

func newDeliveredMarks(store *history.Store, log *slog.Logger) *deliveredMarks {
	return &deliveredMarks{store: store, log: log, interval: 100 * time.Millisecond, pending: map[string]string{}}
}

func (d *deliveredMarks) mark(user, c string) {
	d.mu.Lock()
	if cursor.After(c, d.pending[user]) {
		d.pending[user] = c
	}
	d.mu.Unlock()
}

// Run flushes until ctx ends, then once more.
func (d *deliveredMarks) Run(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			d.flush(fctx)
			cancel()
			return
		case <-t.C:
			d.flush(ctx)
		}
	}
}

func (d *deliveredMarks) flush(ctx context.Context) {
	d.mu.Lock()
	batch := d.pending
	d.pending = map[string]string{}
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := d.store.MarkDeliveredBatch(ctx, batch); err != nil {
		d.log.Warn("delivered marks not saved; will retry", "users", len(batch), "error", err)
		for u, c := range batch {
			d.mark(u, c)
		}
	}
}
