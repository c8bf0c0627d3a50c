package llm

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/fakeopenai"
)

func streamFake(t *testing.T) (*fakeopenai.Server, *OpenAI) {
	t.Helper()
	srv := fakeopenai.Start(t)
	return srv, NewOpenAI(OpenAIConfig{APIKey: "k", BaseURL: srv.BaseURL(), Model: "m1", Timeout: 5 * time.Second})
}

var streamReq = Request{Messages: []Message{{RoleUser, "one two three four"}}}

// TestStreamCutIsAFailure: a stream that stops before the model finished
// is a transient failure, whether the connection broke or the response
// ended cleanly (go-openai reports the latter as io.EOF, as after [DONE]).
func TestStreamCutIsAFailure(t *testing.T) {
	srv, m := streamFake(t)
	for _, tc := range []struct {
		name string
		cut  func()
	}{
		{"response ended mid-answer", func() { srv.EndNextStreams(1, 2) }},
		{"response ended after the last piece, before finish_reason", func() { srv.EndNextStreams(1, 100) }},
		{"response ended before any piece", func() { srv.EndNextStreams(1, 0) }},
		{"connection dropped mid-answer", func() { srv.CutNextStreams(1, 2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cut()
			var got strings.Builder
			resp, err := m.Stream(context.Background(), streamReq, func(d string) { got.WriteString(d) })
			if err == nil {
				t.Fatalf("a cut stream was taken for a whole answer: %q", resp.Content)
			}
			if IsPermanent(err) || ErrorClass(err) != "transport" {
				t.Fatalf("want a transient transport failure, got permanent=%v class=%s: %v", IsPermanent(err), ErrorClass(err), err)
			}
			if resp.Content != "" {
				t.Fatalf("a failed stream returned content %q", resp.Content)
			}
		})
	}
	resp, err := m.Stream(context.Background(), streamReq, func(string) {})
	if err != nil || resp.Content != "echo: one two three four" || resp.CompletionTokens == 0 {
		t.Fatalf("a whole stream: %+v, %v", resp, err)
	}
}

// TestResilientStreamCut is what the ai-consumer sees: a stream cut before
// any text is retried; one cut after text went out to the client fails for
// good (its caller answers with an error frame), never a partial answer.
func TestResilientStreamCut(t *testing.T) {
	srv, m := streamFake(t)
	r := newTestResilient(m, policy(), &recorder{})

	srv.EndNextStreams(1, 0)
	resp, err := r.Stream(context.Background(), streamReq, func(string) {})
	if err != nil || resp.Content != "echo: one two three four" || srv.Requests() != 2 {
		t.Fatalf("cut before any text: %+v, %v after %d requests; want the whole answer on the retry", resp, err, srv.Requests())
	}

	srv.Reset()
	srv.EndNextStreams(1, 2)
	var deltas []string
	resp, err = r.Stream(context.Background(), streamReq, func(d string) { deltas = append(deltas, d) })
	if !IsPermanent(err) || resp.Content != "" || srv.Requests() != 1 || len(deltas) == 0 {
		t.Fatalf("cut after text: %+v, %v (permanent %v) after %d requests and %d deltas", resp, err, IsPermanent(err), srv.Requests(), len(deltas))
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("the cause is lost: %v", err)
	}
}
