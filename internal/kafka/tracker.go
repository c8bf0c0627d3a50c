package kafka

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
)

// offsetTracker follows the records of one partition that were handed out
// for processing, in offset order, and tells which record ends the longest
// finished prefix: committing past an unfinished record would lose it on a
// crash, so the commit point only moves over a contiguous run of done work.
type offsetTracker struct {
	entries []trackedRecord
}

type trackedRecord struct {
	rec  *kgo.Record
	done bool
}

// add registers a record; records of a partition arrive in offset order.
func (t *offsetTracker) add(r *kgo.Record) {
	t.entries = append(t.entries, trackedRecord{rec: r})
}

// finish marks r done and returns the record that now ends the finished
// prefix, or nil when the prefix did not grow.
func (t *offsetTracker) finish(r *kgo.Record) *kgo.Record {
	i := sort.Search(len(t.entries), func(i int) bool { return t.entries[i].rec.Offset >= r.Offset })
	if i == len(t.entries) || t.entries[i].rec.Offset != r.Offset {
		return nil
	}
	t.entries[i].done = true
	var last *kgo.Record
	n := 0
	for n < len(t.entries) && t.entries[n].done {
		last = t.entries[n].rec
		n++
	}
	if n > 0 {
		// Drop the finished prefix; copy when the slice is mostly dead so
		// the backing array does not pin old records.
		t.entries = t.entries[n:]
		if cap(t.entries) > 64 && len(t.entries) < cap(t.entries)/4 {
			t.entries = append([]trackedRecord(nil), t.entries...)
		}
	}
	return last
}

// pending is the number of records not yet behind the commit point.
func (t *offsetTracker) pending() int { return len(t.entries) }
