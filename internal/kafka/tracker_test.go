package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestOffsetTracker(t *testing.T) {
	recs := make([]*kgo.Record, 6)
	var tr offsetTracker
	for i := range recs {
		// Gaps in offsets happen with compaction and transactions.
		recs[i] = &kgo.Record{Offset: int64(i * 2)}
		tr.add(recs[i])
	}
	steps := []struct {
		finish int
		want   int // index of the record that ends the prefix, -1 for none
	}{
		{1, -1}, {2, -1}, {0, 2}, {4, -1}, {3, 4}, {5, 5},
	}
	for _, s := range steps {
		got := tr.finish(recs[s.finish])
		switch {
		case s.want == -1 && got != nil:
			t.Fatalf("finish %d: prefix moved to %d", s.finish, got.Offset)
		case s.want >= 0 && got != recs[s.want]:
			t.Fatalf("finish %d: got %v, want offset %d", s.finish, got, recs[s.want].Offset)
		}
	}
	if tr.pending() != 0 {
		t.Fatalf("pending %d", tr.pending())
	}
	if tr.finish(&kgo.Record{Offset: 99}) != nil {
		t.Fatal("unknown record moved the prefix")
	}
}
