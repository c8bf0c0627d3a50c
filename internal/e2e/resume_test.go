package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/testinfra"
)

func TestHistoryAndResume(t *testing.T) { testHistoryAndResume(t, startStack(t)) }

func testHistoryAndResume(t *testing.T, s *stack) {

	t.Run("an answer produced while the user was away arrives on reconnect", func(t *testing.T) {
		s.OpenAI.SetLatency(500 * time.Millisecond)
		defer s.OpenAI.SetLatency(0)
		c := testinfra.DialChat(t, s.WSBase, testSecret, "away")
		_ = c.Send("answer me later", "")
		ack, _ := c.Expect(t, "ack", wait)
		_ = c.Conn.Close()
		time.Sleep(1500 * time.Millisecond) // the answer is published with nobody listening

		c2 := testinfra.DialChat(t, s.WSBase, testSecret, "away")
		r, _ := c2.Expect(t, "response", wait)
		if r.ReplyTo != ack.ID || r.Cursor == "" {
			t.Fatalf("replayed %s", r.Raw)
		}
		// Delivered now: a third connection gets nothing old again.
		time.Sleep(300 * time.Millisecond) // the delivered mark is batched
		c3 := testinfra.DialChat(t, s.WSBase, testSecret, "away")
		if f, err := c3.Next(500 * time.Millisecond); err == nil {
			t.Fatalf("already delivered answer sent again: %s", f.Raw)
		}
	})

	t.Run("resume with a cursor gets exactly what came after it", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "resumer")
		var cursors []string
		for i := 0; i < 4; i++ {
			_ = c.Send(fmt.Sprintf("m%d", i), "")
			r, _ := c.Expect(t, "response", wait)
			cursors = append(cursors, r.Cursor)
		}
		_ = c.Conn.Close()
		conn, _, err := websocket.DefaultDialer.Dial(testinfra.ChatURL(s.WSBase, testSecret, "resumer")+"&resume="+cursors[1], nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rc := &testinfra.ChatClient{Conn: conn, UserID: "resumer"}
		for _, want := range []string{"echo: m2", "echo: m3"} {
			r, _ := rc.Expect(t, "response", wait)
			if r.Content != want {
				t.Fatalf("resumed %q, want %q", r.Content, want)
			}
		}
		// A resume frame on the open connection never repeats an answer,
		// and live traffic follows: the next frames are m4's ack and answer.
		// (A read that times out would break the connection, so silence is
		// checked this way.)
		_ = rc.Conn.WriteJSON(map[string]string{"type": "resume", "cursor": cursors[0], "userid": "resumer"})
		_ = rc.Send("m4", "")
		r, others := rc.Expect(t, "response", wait)
		if r.Content != "echo: m4" || len(others) != 1 || others[0].Type != "ack" {
			t.Fatalf("after a resume frame: %+v then %s", others, r.Raw)
		}
	})

	t.Run("a bad resume cursor is refused before the upgrade", func(t *testing.T) {
		if got := testinfra.DialStatus(testinfra.ChatURL(s.WSBase, testSecret, "x")+"&resume=nope", nil); got != 400 {
			t.Fatalf("status %d", got)
		}
	})

	t.Run("the model gets the conversation so far", func(t *testing.T) {
		c := testinfra.DialChat(t, s.WSBase, testSecret, "talker")
		_ = c.Send("my name is Ada", "")
		c.Expect(t, "response", wait)
		_ = c.Send("what is my name?", "")
		c.Expect(t, "response", wait)
		reqs := s.OpenAI.RequestsFor("what is my name?")
		if len(reqs) != 1 {
			t.Fatalf("%d requests", len(reqs))
		}
		var roles, contents []string
		for _, m := range reqs[0].Messages {
			roles = append(roles, m.Role)
			contents = append(contents, m.Content)
		}
		want := []string{"system", "user", "assistant", "user"}
		if fmt.Sprint(roles) != fmt.Sprint(want) || contents[1] != "my name is Ada" || contents[2] != "echo: my name is Ada" {
			t.Fatalf("conversation sent: %v %q", roles, contents)
		}
	})
}
