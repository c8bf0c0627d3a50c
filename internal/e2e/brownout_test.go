package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/testinfra"
)

// A 10 s model brownout under a small steady load, on the shipped
// ANSWER_DEADLINE and breaker settings: the model API answers 429 with
// Retry-After for 6 s, then 503 for 4 s, then recovers. Messages wait for
// the model instead of failing, so every message is answered by the model,
// none gets an error frame, p99 send→answer stays within 20 s, and a
// message that waited hears one status (delayed) frame at most.
func TestModelBrownoutDelaysAnswers(t *testing.T) {
	const (
		users    = 10
		every    = 500 * time.Millisecond // per user: 20 msg/s in all
		before   = 2 * time.Second        // healthy, then the brownout
		limited  = 6 * time.Second        // 429, Retry-After: 1
		failing  = 4 * time.Second        // 503
		after    = 3 * time.Second        // healthy again, still sending
		p99Bound = 20 * time.Second
	)
	s := startStack(t)
	books := &brownoutBooks{sent: map[string]time.Time{}, took: map[string]time.Duration{}, at: map[string]time.Time{}, status: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range users {
		c := testinfra.DialChat(t, s.WSBase, testSecret, fmt.Sprintf("brownout-%d", i))
		wg.Add(2)
		go func() { defer wg.Done(); books.read(c) }()
		go func() { defer wg.Done(); books.send(t, c, every, stop) }()
	}
	time.Sleep(before)
	s.OpenAI.FailNext(1<<30, http.StatusTooManyRequests, "1")
	time.Sleep(limited)
	s.OpenAI.FailNext(1<<30, http.StatusServiceUnavailable, "")
	time.Sleep(failing)
	s.OpenAI.FailNext(0, 0, "")
	recovered := time.Now()
	time.Sleep(after)
	close(stop)

	// Everything sent is answered well before the deadline of a minute.
	deadline := time.Now().Add(30 * time.Second)
	for books.unanswered() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range books.clients() {
		_ = c.Conn.Close()
	}
	wg.Wait()
	books.check(t, p99Bound, recovered)
}

// brownoutBooks keeps, per client message id, when it was sent, how long
// its answer took and how many status frames it got.
type brownoutBooks struct {
	mu     sync.Mutex
	conns  []*testinfra.ChatClient
	sent   map[string]time.Time
	took   map[string]time.Duration
	status map[string]int
	errors []string
	wrong  []string
	at     map[string]time.Time // when the answer arrived
}

func (b *brownoutBooks) send(t *testing.T, c *testinfra.ChatClient, every time.Duration, stop <-chan struct{}) {
	b.mu.Lock()
	b.conns = append(b.conns, c)
	b.mu.Unlock()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		id := fmt.Sprintf("%s-%d", c.UserID, n)
		b.mu.Lock()
		b.sent[id] = time.Now()
		b.mu.Unlock()
		if err := c.Send("question "+id, id); err != nil {
			t.Errorf("%s: send: %v", id, err)
			return
		}
	}
}

// read books c's frames until its connection is closed.
func (b *brownoutBooks) read(c *testinfra.ChatClient) {
	for {
		f, err := c.Next(time.Minute)
		if err != nil {
			return
		}
		b.mu.Lock()
		switch f.Type {
		case protocol.TypeResponse, protocol.TypeError:
			if f.Type == protocol.TypeError {
				b.errors = append(b.errors, f.Raw)
			} else if f.Content != "echo: question "+f.ClientID {
				b.wrong = append(b.wrong, f.Raw)
			}
			if _, dup := b.took[f.ClientID]; dup {
				b.wrong = append(b.wrong, "second answer: "+f.Raw)
			}
			b.at[f.ClientID] = time.Now()
			b.took[f.ClientID] = b.at[f.ClientID].Sub(b.sent[f.ClientID])
		case protocol.TypeStatus:
			b.status[f.ClientID]++
		}
		b.mu.Unlock()
	}
}

func (b *brownoutBooks) unanswered() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sent) - len(b.took)
}

func (b *brownoutBooks) clients() []*testinfra.ChatClient {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*testinfra.ChatClient(nil), b.conns...)
}

func (b *brownoutBooks) check(t *testing.T, p99Bound time.Duration, recovered time.Time) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var took []time.Duration
	statuses, waited := 0, 0
	var backlog time.Duration // from the model's return to the last answer sent before it
	for id := range b.sent {
		d, ok := b.took[id]
		if !ok {
			t.Errorf("%s: no answer", id)
			continue
		}
		took = append(took, d)
		if b.sent[id].Before(recovered) {
			backlog = max(backlog, b.at[id].Sub(recovered))
		}
		if d > 4*time.Second {
			waited++
		}
		if n := b.status[id]; n > 1 {
			t.Errorf("%s: %d status frames, want at most one", id, n)
		}
		statuses += b.status[id]
	}
	p50, p99 := percentile(took, 0.5), percentile(took, 0.99)
	t.Logf("%d messages, %d answered, %d error frames, %d status frames (%d answers took over 4 s); send→answer p50 %s, p99 %s, max %s; the messages sent before the model came back were all answered %s after it",
		len(b.sent), len(b.took), len(b.errors), statuses, waited, p50, p99, percentile(took, 1), backlog.Round(10*time.Millisecond))
	if len(b.errors) > 0 {
		t.Errorf("%d error frames during a brownout shorter than the deadline, e.g. %s", len(b.errors), b.errors[0])
	}
	if len(b.wrong) > 0 {
		t.Errorf("%d wrong or repeated answers, e.g. %s", len(b.wrong), b.wrong[0])
	}
	if p99 > p99Bound {
		t.Errorf("p99 send→answer %s, want ≤ %s", p99, p99Bound)
	}
	// Each user's message in the model when the brownout began waited for
	// it; the ones behind it waited in the user's lane.
	told := map[string]bool{}
	for id, n := range b.status {
		if n > 0 {
			told[id[:strings.LastIndex(id, "-")]] = true
		}
	}
	if len(told) < len(b.conns) {
		t.Errorf("%d of %d users got a status frame while their messages waited for the model", len(told), len(b.conns))
	}
}
