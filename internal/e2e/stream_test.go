package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/testinfra"
)

// A client that asks for streaming gets chunk frames in order, then the
// final response holding the whole text; the history keeps only the final
// text. The first chunk's delay over the model's first token is logged (a
// measurement, not an assertion: see docs/performance.md).
func TestStreamingAnswers(t *testing.T) {
	s := startStack(t)
	const firstToken = 300 * time.Millisecond
	s.OpenAI.SetStreamDelays(firstToken, 20*time.Millisecond)
	c := testinfra.DialChat(t, s.WSBase, testSecret, "streamer")
	start := time.Now()
	if err := c.Conn.WriteJSON(map[string]any{"type": "message", "content": "stream please", "userid": "streamer", "stream": true}); err != nil {
		t.Fatal(err)
	}
	ack, _ := c.Expect(t, "ack", wait)
	var text strings.Builder
	seq := 0
	var firstChunk time.Duration
	for {
		f, err := c.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == "response" {
			if f.Content != text.String() || f.ReplyTo != ack.ID || seq < 2 {
				t.Fatalf("final %q after %d chunks %q", f.Content, seq, text.String())
			}
			break
		}
		if f.Type != "chunk" || f.ReplyTo != ack.ID {
			t.Fatalf("unexpected %s", f.Raw)
		}
		seq++
		if seq == 1 {
			firstChunk = time.Since(start)
		}
		if f.Seq != seq {
			t.Fatalf("chunk out of order, want seq %d: %s", seq, f.Raw)
		}
		text.WriteString(f.Delta)
	}
	t.Logf("first chunk %v after sending; the model's first token came %v after the call, so the pipeline added about %v both ways",
		firstChunk.Round(time.Millisecond), firstToken, (firstChunk - firstToken).Round(time.Millisecond))

	// Resuming replays the final text only, never the chunks.
	conn, _, err := websocket.DefaultDialer.Dial(testinfra.ChatURL(s.WSBase, testSecret, "streamer")+"&resume=0-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc := &testinfra.ChatClient{Conn: conn, UserID: "streamer"}
	r, others := rc.Expect(t, "response", wait)
	if len(others) != 0 || r.Content != text.String() {
		t.Fatalf("replay: %+v then %s", others, r.Raw)
	}
}
