package history

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/redisbus"
	"github.com/chatrelay/chat/internal/rediskeys"
	"github.com/chatrelay/chat/internal/testinfra"
)

func answer(user string, n int) *envelope.Envelope {
	return &envelope.Envelope{
		Type: envelope.TypeResponse, ID: fmt.Sprintf("r%d", n), ReplyTo: fmt.Sprintf("m%d", n), UserID: user,
		Content: fmt.Sprintf("answer %d", n), Question: fmt.Sprintf("question %d", n), CorrelationID: "c",
		Timestamp: time.Now().UTC(), AcceptedAt: time.Now().UTC(),
	}
}

// startRedis starts a redis-server for the test and returns a client on it.
func startRedis(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	srv := testinfra.StartRedis(tb)
	rdb, err := redisbus.NewClient(srv.URL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestHistory(t *testing.T) {
	rdb := startRedis(t)
	ctx := context.Background()
	s := New(rdb, Config{MaxLen: 200, TTL: time.Hour})

	var cursors []string
	for i := 0; i < 5; i++ {
		c, err := s.Append(ctx, answer("u1", i))
		if err != nil {
			t.Fatal(err)
		}
		cursors = append(cursors, c)
	}

	t.Run("a redelivered answer is appended once and keeps its cursor", func(t *testing.T) {
		c, err := s.Append(ctx, answer("u1", 2))
		if err != nil || c != cursors[2] {
			t.Fatalf("cursor %q (first %q) err %v", c, cursors[2], err)
		}
		all, _ := s.Since(ctx, "u1", "", 100)
		if len(all) != 5 {
			t.Fatalf("%d answers in history, want 5", len(all))
		}
	})

	t.Run("since a cursor returns the later answers in order", func(t *testing.T) {
		got, err := s.Since(ctx, "u1", cursors[1], 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].ID != "r2" || got[2].ID != "r4" || got[0].Cursor != cursors[2] {
			t.Fatalf("got %+v", got)
		}
		if _, err := s.Since(ctx, "u1", "nonsense", 10); err == nil {
			t.Fatal("a bad cursor must be refused")
		}
	})

	t.Run("delivered marker only moves forward", func(t *testing.T) {
		if err := s.MarkDelivered(ctx, "u1", cursors[3]); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkDeliveredBatch(ctx, map[string]string{"u1": cursors[1]}); err != nil {
			t.Fatal(err)
		}
		if got, _ := rdb.Get(ctx, deliveredKey("u1")).Result(); got != cursors[3] {
			t.Fatalf("marker %q, want %q", got, cursors[3])
		}
	})

	t.Run("from the delivered marker, in one round trip", func(t *testing.T) {
		got, err := s.FromDelivered(ctx, "u1", 100) // marker at cursors[3]
		if err != nil {
			t.Fatal(err)
		}
		if got.From != cursors[3] || len(got.Answers) != 1 || got.Answers[0].ID != "r4" || got.Answers[0].Cursor != cursors[4] ||
			got.Answers[0].Content != "answer 4" || got.Last != cursors[4] || got.Full {
			t.Fatalf("got %+v", got)
		}
		none, err := s.FromDelivered(ctx, "nobody", 100)
		if err != nil || len(none.Answers) != 0 || none.From != cursor.Start || none.Last != cursor.Start {
			t.Fatalf("unknown user: %v %+v", err, none)
		}
		if _, err := s.Append(ctx, answer("u3", 0)); err != nil {
			t.Fatal(err)
		}
		all, err := s.FromDelivered(ctx, "u3", 100) // no marker: everything
		if err != nil || len(all.Answers) != 1 || all.Answers[0].ID != "r0" || all.From != cursor.Start {
			t.Fatalf("no marker: %v %+v", err, all)
		}
	})

	t.Run("pages after a position, questions included in the count", func(t *testing.T) {
		p, err := s.After(ctx, "u3", cursor.Start, 1) // the question only
		if err != nil || len(p.Answers) != 0 || !p.Full || p.Last == cursor.Start {
			t.Fatalf("first page: %v %+v", err, p)
		}
		p, err = s.After(ctx, "u3", p.Last, 1)
		if err != nil || len(p.Answers) != 1 || p.Answers[0].ID != "r0" {
			t.Fatalf("second page: %v %+v", err, p)
		}
		if _, err := s.After(ctx, "u3", "nonsense", 1); err == nil {
			t.Fatal("a bad cursor must be refused")
		}
	})

	t.Run("the marker script orders cursors as cursor.Compare does", func(t *testing.T) {
		// Or a connection without a cursor starts from the wrong place.
		pairs := [][2]string{{"1-0", "1-1"}, {"2-0", "1-9"}, {"1700000000000-5", "1700000000000-10"}, {"9-0", "10-0"}, {"5-5", "5-5"}}
		for i, p := range pairs {
			user := fmt.Sprintf("order%d", i)
			for _, c := range p {
				if err := s.MarkDelivered(ctx, user, c); err != nil {
					t.Fatal(err)
				}
			}
			got, _ := rdb.Get(ctx, deliveredKey(user)).Result()
			if want := cursor.Max(p[0], p[1]); got != want {
				t.Errorf("marked %s then %s: marker %s, cursor order says %s", p[0], p[1], got, want)
			}
		}
	})

	t.Run("answer lookup and recent history in one round trip", func(t *testing.T) {
		a := NewAnswers(rdb, time.Hour)
		stored, recent, err := a.GetWithRecent(ctx, "u1", "m-new", 4)
		if err != nil || stored != nil {
			t.Fatalf("no answer yet: %v %+v", err, stored)
		}
		want := []string{"question 3", "answer 3", "question 4", "answer 4"}
		if len(recent) != len(want) {
			t.Fatalf("recent %d entries, want %d", len(recent), len(want))
		}
		for i, e := range recent {
			if e.Content != want[i] {
				t.Fatalf("recent[%d] = %q, want %q", i, e.Content, want[i])
			}
		}
		ans := answer("u1", 9)
		ans.ReplyTo = "m-new"
		if _, err := a.Put(ctx, ans); err != nil {
			t.Fatal(err)
		}
		stored, recent, err = a.GetWithRecent(ctx, "u1", "m-new", 4)
		if err != nil || stored == nil || stored.ID != ans.ID || recent != nil {
			t.Fatalf("stored answer: %v %+v %d recent", err, stored, len(recent))
		}
		stored, recent, err = a.GetWithRecent(ctx, "u1", "m-other", 0)
		if err != nil || stored != nil || recent != nil {
			t.Fatalf("n=0 reads no history: %v %+v %+v", err, stored, recent)
		}
		// A history older than the memory list (or a memory longer than
		// it keeps) is read from the stream, with the same result.
		_, viaList, err := a.GetWithRecent(ctx, "u1", "m-x", 6)
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Del(ctx, rediskeys.Memory("u1")).Err(); err != nil {
			t.Fatal(err)
		}
		_, viaStream, err := a.GetWithRecent(ctx, "u1", "m-x", 6)
		if err != nil {
			t.Fatal(err)
		}
		if len(viaList) != 6 || !slices.Equal(viaList, viaStream) {
			t.Fatalf("memory list %+v, stream %+v", viaList, viaStream)
		}
		_, long, err := a.GetWithRecent(ctx, "u1", "m-x", MemoryEntries+1)
		if err != nil || len(long) != 10 {
			t.Fatalf("a memory longer than the list: %v, %d turns (the history holds 10)", err, len(long))
		}
	})

	t.Run("append and publish in one round trip, again on redelivery", func(t *testing.T) {
		sub := rdb.Subscribe(ctx, "test:u4")
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		a := answer("u4", 0)
		for i := range 2 {
			cursor, err := s.AppendPublish(ctx, a, "test:u4", []byte(`{"cursor":"PLACEHOLDER","n":1}`), "PLACEHOLDER")
			if err != nil {
				t.Fatal(err)
			}
			m, err := sub.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"cursor":"` + cursor + `","n":1}`; m.Payload != want {
				t.Fatalf("publish %d: payload %s, want %s", i, m.Payload, want)
			}
		}
		if got, _ := s.Since(ctx, "u4", "", 10); len(got) != 1 {
			t.Fatalf("%d answers stored, want 1", len(got))
		}
		for _, bad := range []string{`{"cursor":"x"}`, `{"a":"PLACEHOLDER","b":"PLACEHOLDER"}`} {
			if _, err := s.AppendPublish(ctx, answer("u4", 1), "test:u4", []byte(bad), "PLACEHOLDER"); err == nil {
				t.Fatalf("payload %s: want an error", bad)
			}
		}
	})

	t.Run("the stream is capped", func(t *testing.T) {
		small := New(rdb, Config{MaxLen: 10, TTL: time.Hour})
		for i := 0; i < 300; i++ {
			if _, err := small.Append(ctx, answer("u2", i)); err != nil {
				t.Fatal(err)
			}
		}
		n, _ := rdb.XLen(ctx, streamKey("u2")).Result()
		if n > 200 { // MAXLEN ~ trims in whole nodes
			t.Fatalf("stream holds %d entries", n)
		}
	})
}

func TestAnswers(t *testing.T) {
	srv := testinfra.StartRedis(t)
	rdb, _ := redisbus.NewClient(srv.URL())
	defer rdb.Close()
	ctx := context.Background()
	a := NewAnswers(rdb, time.Hour)
	if got, err := a.Get(ctx, "u1", "m1"); got != nil || err != nil {
		t.Fatalf("empty store returned %v %v", got, err)
	}
	first := answer("u1", 1)
	if got, err := a.Put(ctx, first); err != nil || got.ID != "r1" {
		t.Fatalf("%v %v", got, err)
	}
	second := answer("u1", 1)
	second.ID = "r-other"
	got, err := a.Put(ctx, second)
	if err != nil || got.ID != "r1" {
		t.Fatalf("racing answer won: %v %v", got, err)
	}
	if got, _ := a.Get(ctx, "u1", "m1"); got.ID != "r1" {
		t.Fatalf("stored %v", got)
	}
}

// Appends run the script by its digest in shared pipelines; a server that
// lost its scripts (a restart, SCRIPT FLUSH, a promoted replica) must not
// fail them: the append that finds the script missing loads it.
func TestAppendAfterTheServerLostItsScripts(t *testing.T) {
	rdb := startRedis(t)
	ctx := context.Background()
	s := New(rdb, Config{MaxLen: 200, TTL: time.Hour})
	first, err := s.Append(ctx, answer("u1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	second, err := s.Append(ctx, answer("u1", 2))
	if err != nil {
		t.Fatalf("append after SCRIPT FLUSH: %v", err)
	}
	if again, err := s.Append(ctx, answer("u1", 1)); err != nil || again != first {
		t.Fatalf("redelivered append: %q, %v; want the first cursor %q", again, err, first)
	}
	if second == first {
		t.Fatalf("two answers got one cursor %q", first)
	}
}
