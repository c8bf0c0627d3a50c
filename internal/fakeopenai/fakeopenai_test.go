package fakeopenai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

const testKey = "sk-test-0123456789"

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func user(s string) openai.ChatCompletionMessage {
	return openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: s}
}

func assistant(s string) openai.ChatCompletionMessage {
	return openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: s}
}

func system(s string) openai.ChatCompletionMessage {
	return openai.ChatCompletionMessage{Role: openai.ChatMessageRoleSystem, Content: s}
}

func TestChatCompletion(t *testing.T) {
	tests := []struct {
		name       string
		opts       []Option
		req        openai.ChatCompletionRequest
		want       string
		wantPrompt int
		wantFinish openai.FinishReason
	}{
		{
			name:       "echo of the only message",
			req:        openai.ChatCompletionRequest{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{user("hello there")}},
			want:       "echo: hello there",
			wantPrompt: 2,
			wantFinish: openai.FinishReasonStop,
		},
		{
			name: "echo of the last user message in a conversation",
			req: openai.ChatCompletionRequest{Model: "other-model", Messages: []openai.ChatCompletionMessage{
				system("be brief"), user("first question"), assistant("echo: first question"), user("second one"),
			}},
			want:       "echo: second one",
			wantPrompt: 2 + 2 + 3 + 2,
			wantFinish: openai.FinishReasonStop,
		},
		{
			name: "multi-part content",
			req: openai.ChatCompletionRequest{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessage{{
				Role: openai.ChatMessageRoleUser,
				MultiContent: []openai.ChatMessagePart{
					{Type: openai.ChatMessagePartTypeText, Text: "look at"},
					{Type: openai.ChatMessagePartTypeImageURL, ImageURL: &openai.ChatMessageImageURL{URL: "https://example.invalid/cat.png"}},
					{Type: openai.ChatMessagePartTypeText, Text: "this"},
				},
			}}},
			want:       "echo: look at this",
			wantPrompt: 3,
			wantFinish: openai.FinishReasonStop,
		},
		{
			name: "custom responder",
			opts: []Option{WithResponder(func(req openai.ChatCompletionRequest) string {
				return fmt.Sprintf("%d messages", len(req.Messages))
			})},
			req:        openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{system("s"), user("u")}},
			want:       "2 messages",
			wantPrompt: 2,
			wantFinish: openai.FinishReasonStop,
		},
		{
			name:       "max tokens truncates with finish reason length",
			req:        openai.ChatCompletionRequest{Model: "m", MaxCompletionTokens: 3, Messages: []openai.ChatCompletionMessage{user("one two three four")}},
			want:       "echo: one two ",
			wantPrompt: 4,
			wantFinish: openai.FinishReasonLength,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, append([]Option{WithAPIKey(testKey)}, tt.opts...)...)
			resp, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), tt.req)
			if err != nil {
				t.Fatalf("CreateChatCompletion: %v", err)
			}
			if !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Object != "chat.completion" || resp.Created == 0 {
				t.Errorf("envelope = id %q object %q created %d", resp.ID, resp.Object, resp.Created)
			}
			if resp.Model != tt.req.Model {
				t.Errorf("model = %q, want the request's %q", resp.Model, tt.req.Model)
			}
			if len(resp.Choices) != 1 {
				t.Fatalf("got %d choices, want 1", len(resp.Choices))
			}
			c := resp.Choices[0]
			if c.Message.Role != openai.ChatMessageRoleAssistant || c.Message.Content != tt.want || c.FinishReason != tt.wantFinish {
				t.Errorf("choice = role %q content %q finish %q; want assistant %q %q", c.Message.Role, c.Message.Content, c.FinishReason, tt.want, tt.wantFinish)
			}
			wantUsage := openai.Usage{PromptTokens: tt.wantPrompt, CompletionTokens: CountTokens(tt.want), TotalTokens: tt.wantPrompt + CountTokens(tt.want)}
			if resp.Usage.PromptTokens != wantUsage.PromptTokens || resp.Usage.CompletionTokens != wantUsage.CompletionTokens || resp.Usage.TotalTokens != wantUsage.TotalTokens {
				t.Errorf("usage = %+v, want %+v", resp.Usage, wantUsage)
			}
			if resp.Header().Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id header")
			}
			if s.Requests() != 1 || s.Completed() != 1 {
				t.Errorf("Requests() = %d, Completed() = %d; want 1, 1", s.Requests(), s.Completed())
			}
		})
	}
}

// streamAll reads a stream to the end and returns its chunks.
func streamAll(t *testing.T, stream *openai.ChatCompletionStream) ([]openai.ChatCompletionStreamResponse, error) {
	t.Helper()
	defer stream.Close()
	var chunks []openai.ChatCompletionStreamResponse
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, c)
	}
}

func content(chunks []openai.ChatCompletionStreamResponse) string {
	var b strings.Builder
	for _, c := range chunks {
		for _, ch := range c.Choices {
			b.WriteString(ch.Delta.Content)
		}
	}
	return b.String()
}

func TestStream(t *testing.T) {
	const msg = "tell me a long story please"
	const want = "echo: " + msg
	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("include_usage=%v", includeUsage), func(t *testing.T) {
			s := Start(t, WithAPIKey(testKey))
			req := openai.ChatCompletionRequest{Model: "gpt-4o-mini", Stream: true, Messages: []openai.ChatCompletionMessage{user(msg)}}
			if includeUsage {
				req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
			}
			stream, err := s.Client().CreateChatCompletionStream(ctxT(t, 10*time.Second), req)
			if err != nil {
				t.Fatalf("CreateChatCompletionStream: %v", err)
			}
			if ct := stream.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("Content-Type = %q", ct)
			}
			chunks, err := streamAll(t, stream)
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			if got := content(chunks); got != want {
				t.Fatalf("streamed %q, want %q", got, want)
			}
			contentChunks := 0
			for _, c := range chunks {
				if c.Object != "chat.completion.chunk" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.ID != chunks[0].ID || c.Model != req.Model {
					t.Errorf("chunk envelope %+v", c)
				}
				for _, ch := range c.Choices {
					if ch.Delta.Content != "" {
						contentChunks++
					}
				}
			}
			if contentChunks < 3 {
				t.Errorf("answer came in %d content chunks, want several", contentChunks)
			}
			if r := chunks[0].Choices[0].Delta.Role; r != openai.ChatMessageRoleAssistant {
				t.Errorf("first chunk role = %q, want assistant", r)
			}

			// The finish chunk, then with include_usage a choiceless usage chunk.
			last := chunks[len(chunks)-1]
			if includeUsage {
				if len(last.Choices) != 0 || last.Usage == nil {
					t.Fatalf("last chunk = %+v, want usage and no choices", last)
				}
				wantUsage := openai.Usage{PromptTokens: CountTokens(msg), CompletionTokens: CountTokens(want), TotalTokens: CountTokens(msg) + CountTokens(want)}
				if last.Usage.PromptTokens != wantUsage.PromptTokens || last.Usage.CompletionTokens != wantUsage.CompletionTokens || last.Usage.TotalTokens != wantUsage.TotalTokens {
					t.Errorf("usage = %+v, want %+v", *last.Usage, wantUsage)
				}
				last = chunks[len(chunks)-2]
			}
			for _, c := range chunks {
				if c.Usage != nil && c.Usage.TotalTokens > 0 && len(c.Choices) > 0 {
					t.Errorf("usage on a content chunk: %+v", c)
				}
			}
			if len(last.Choices) != 1 || last.Choices[0].FinishReason != openai.FinishReasonStop {
				t.Fatalf("finish chunk = %+v, want finish_reason stop", last)
			}
			if s.Completed() != 1 {
				t.Errorf("Completed() = %d, want 1", s.Completed())
			}
		})
	}
}

func TestStreamDelays(t *testing.T) {
	s := Start(t, WithStreamDelays(300*time.Millisecond, 30*time.Millisecond))
	start := time.Now()
	stream, err := s.Client().CreateChatCompletionStream(ctxT(t, 10*time.Second), openai.ChatCompletionRequest{
		Model: "m", Stream: true, Messages: []openai.ChatCompletionMessage{user("a b c d")},
	})
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	defer stream.Close()
	// Headers and the role chunk come at once; content waits.
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("headers took %v, want them before the first token", d)
	}
	var firstContent time.Duration
	for firstContent == 0 {
		c, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			firstContent = time.Since(start)
		}
	}
	if firstContent < 300*time.Millisecond {
		t.Errorf("first token after %v, want >= 300ms", firstContent)
	}
	if _, err := streamAll(t, stream); err != nil {
		t.Fatal(err)
	}
	// 5 content chunks: 300ms + 4 * 30ms.
	if total := time.Since(start); total < 420*time.Millisecond {
		t.Errorf("stream took %v, want >= 420ms", total)
	}
}

// TestCutStream: a cut stream stops after the pieces asked for, without
// the finish chunk and [DONE]; the next stream is whole. A dropped
// connection is a read error for go-openai; a properly ended response is
// io.EOF, exactly as after [DONE], so a client must tell the two apart by
// what it did not receive.
func TestCutStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cut     func(s *Server)
		readErr bool
	}{
		{"connection dropped", func(s *Server) { s.CutNextStreams(1, 2) }, true},
		{"response ended", func(s *Server) { s.EndNextStreams(1, 2) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t)
			tc.cut(s)
			req := openai.ChatCompletionRequest{Model: "m", Stream: true, Messages: []openai.ChatCompletionMessage{user("one two three four")}}
			stream, err := s.Client().CreateChatCompletionStream(ctxT(t, 10*time.Second), req)
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			chunks, err := streamAll(t, stream)
			if (err != nil) != tc.readErr {
				t.Fatalf("read error %v, want one: %v", err, tc.readErr)
			}
			if got := content(chunks); got != "echo: one " {
				t.Errorf("before the cut got %q, want the first two pieces", got)
			}
			for _, c := range chunks {
				if len(c.Choices) > 0 && c.Choices[0].FinishReason != "" {
					t.Errorf("a cut stream sent finish_reason %q", c.Choices[0].FinishReason)
				}
			}

			stream, err = s.Client().CreateChatCompletionStream(ctxT(t, 10*time.Second), req)
			if err != nil {
				t.Fatalf("stream after cut: %v", err)
			}
			chunks, err = streamAll(t, stream)
			if err != nil || content(chunks) != "echo: one two three four" {
				t.Fatalf("stream after the cut = %q, %v", content(chunks), err)
			}
			if s.Requests() != 2 || s.Completed() != 1 {
				t.Errorf("Requests() = %d, Completed() = %d; want 2, 1", s.Requests(), s.Completed())
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name       string
		key        string
		setup      func(*Server)
		stream     bool
		wantStatus int
		wantType   string
		wantCode   any
	}{
		{name: "wrong key", key: "sk-wrong-key-000000", wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "missing key", key: "", wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "rate limited", key: testKey, setup: func(s *Server) { s.FailNext(1, 429, "2") }, wantStatus: 429, wantType: "rate_limit_error", wantCode: "rate_limit_exceeded"},
		{name: "rate limited stream", key: testKey, stream: true, setup: func(s *Server) { s.FailNext(1, 429, "") }, wantStatus: 429, wantType: "rate_limit_error", wantCode: "rate_limit_exceeded"},
		// The body says "code": null; go-openai decodes a null code as 0.
		{name: "server error", key: testKey, setup: func(s *Server) { s.FailNext(1, 500, "") }, wantStatus: 500, wantType: "server_error", wantCode: 0},
		{name: "overloaded", key: testKey, setup: func(s *Server) { s.FailNext(1, 503, "") }, wantStatus: 503, wantType: "server_error", wantCode: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, WithAPIKey(testKey))
			if tt.setup != nil {
				tt.setup(s)
			}
			cfg := s.ClientConfig()
			cfg = openai.DefaultConfig(tt.key)
			cfg.BaseURL = s.BaseURL()
			client := openai.NewClientWithConfig(cfg)
			req := openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}}
			var err error
			if tt.stream {
				req.Stream = true
				var st *openai.ChatCompletionStream
				st, err = client.CreateChatCompletionStream(ctxT(t, 10*time.Second), req)
				if st != nil {
					st.Close()
				}
			} else {
				_, err = client.CreateChatCompletion(ctxT(t, 10*time.Second), req)
			}
			var apiErr *openai.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error = %T %v, want *openai.APIError", err, err)
			}
			if apiErr.HTTPStatusCode != tt.wantStatus || apiErr.Type != tt.wantType || apiErr.Code != tt.wantCode || apiErr.Message == "" {
				t.Fatalf("APIError = status %d type %q code %v message %q; want %d %q %v", apiErr.HTTPStatusCode, apiErr.Type, apiErr.Code, apiErr.Message, tt.wantStatus, tt.wantType, tt.wantCode)
			}
			if strings.Contains(apiErr.Message, tt.key) && tt.key != "" {
				t.Errorf("error message leaks the whole key: %q", apiErr.Message)
			}

			// FailNext is used up; the right key works again.
			if tt.setup != nil {
				if _, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}}); err != nil {
					t.Fatalf("after the fault: %v", err)
				}
			}
		})
	}
}

func TestFailNextCount(t *testing.T) {
	s := Start(t)
	s.FailNext(3, 500, "")
	req := openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("x")}}
	var statuses []int
	for range 5 {
		_, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), req)
		var apiErr *openai.APIError
		switch {
		case err == nil:
			statuses = append(statuses, 200)
		case errors.As(err, &apiErr):
			statuses = append(statuses, apiErr.HTTPStatusCode)
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if want := []int{500, 500, 500, 200, 200}; !slices.Equal(statuses, want) {
		t.Fatalf("statuses = %v, want %v", statuses, want)
	}
	if s.Requests() != 5 || s.Completed() != 2 {
		t.Errorf("Requests() = %d, Completed() = %d; want 5, 2", s.Requests(), s.Completed())
	}
	// Failed requests are still logged: a retry shows as a repeat.
	if n := len(s.RequestsFor("x")); n != 5 {
		t.Errorf("RequestsFor(x) has %d requests, want 5", n)
	}
}

// rawPost sends body to the chat completions endpoint without go-openai, to
// see headers and bodies exactly as sent. It returns the response and its
// "error" object, nil on success.
func rawPost(t *testing.T, s *Server, key, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodPost, s.BaseURL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, raw)
	}
	return resp, out.Error
}

func TestRetryAfterHeader(t *testing.T) {
	s := Start(t, WithAPIKey(testKey))
	s.FailNext(1, http.StatusTooManyRequests, "7")
	resp, e := rawPost(t, s, testKey, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("status %d, Retry-After %q; want 429, 7", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if e["type"] != "rate_limit_error" || e["code"] != "rate_limit_exceeded" {
		t.Fatalf("error body = %v", e)
	}
	resp, _ = rawPost(t, s, testKey, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("after the fault: status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name, body, wantMsg string
	}{
		{"not JSON", `{"model":`, "could not parse the JSON body"},
		{"missing model", `{"messages":[{"role":"user","content":"hi"}]}`, "you must provide a model parameter"},
		{"empty messages", `{"model":"m","messages":[]}`, "too short - 'messages'"},
		{"no messages", `{"model":"m"}`, "too short - 'messages'"},
		{"bad role", `{"model":"m","messages":[{"role":"robot","content":"hi"}]}`, "messages[0].role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, WithAPIKey(testKey))
			resp, e := rawPost(t, s, testKey, tt.body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400", resp.StatusCode)
			}
			if e == nil {
				t.Fatal("no error object in the response")
			}
			if e["type"] != "invalid_request_error" || !strings.Contains(fmt.Sprint(e["message"]), tt.wantMsg) {
				t.Fatalf("error = %v, want invalid_request_error containing %q", e, tt.wantMsg)
			}
			for _, k := range []string{"param", "code"} {
				if v, present := e[k]; !present || v != nil {
					t.Errorf("error.%s = %v (present %v), want null", k, v, present)
				}
			}
			if s.Requests() != 1 || s.Completed() != 0 || len(s.LastRequests(0)) != 0 {
				t.Errorf("Requests %d Completed %d logged %d; want 1, 0, 0", s.Requests(), s.Completed(), len(s.LastRequests(0)))
			}
		})
	}
}

func TestUnknownPath(t *testing.T) {
	s := Start(t)
	resp, err := http.Get(s.BaseURL() + "/embeddings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 404 || body["error"]["type"] != "invalid_request_error" {
		t.Fatalf("status %d body %v err %v; want 404 with an OpenAI error", resp.StatusCode, body, err)
	}
}

func TestDown(t *testing.T) {
	s := Start(t)
	client := s.Client()
	req := openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}}

	// Warm a keep-alive connection first: a dead server must break
	// reused connections too, not only new ones.
	if _, err := client.CreateChatCompletion(ctxT(t, 10*time.Second), req); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	s.SetDown(true)
	for _, stream := range []bool{false, true} {
		var err error
		if stream {
			r := req
			r.Stream = true
			var st *openai.ChatCompletionStream
			st, err = client.CreateChatCompletionStream(ctxT(t, 10*time.Second), r)
			if st != nil {
				st.Close()
			}
		} else {
			_, err = client.CreateChatCompletion(ctxT(t, 10*time.Second), req)
		}
		var apiErr *openai.APIError
		var reqErr *openai.RequestError
		var urlErr *url.Error
		if err == nil || errors.As(err, &apiErr) || errors.As(err, &reqErr) || !errors.As(err, &urlErr) {
			t.Fatalf("stream=%v: error = %T %v, want a transport error (*url.Error)", stream, err, err)
		}
	}
	s.SetDown(false)
	if _, err := client.CreateChatCompletion(ctxT(t, 10*time.Second), req); err != nil {
		t.Fatalf("after coming back up: %v", err)
	}
	if s.Requests() < 4 || s.Completed() != 2 {
		t.Errorf("Requests() = %d, Completed() = %d; want >= 4, 2", s.Requests(), s.Completed())
	}
}

func TestHang(t *testing.T) {
	s := Start(t)
	s.SetHang(true)
	req := openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}}

	t.Run("context deadline", func(t *testing.T) {
		start := time.Now()
		_, err := s.Client().CreateChatCompletion(ctxT(t, 200*time.Millisecond), req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
			t.Fatalf("gave up after %v", d)
		}
	})
	t.Run("http client timeout", func(t *testing.T) {
		cfg := s.ClientConfig()
		cfg.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond}
		_, err := openai.NewClientWithConfig(cfg).CreateChatCompletion(context.Background(), req)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("error = %v, want a timeout", err)
		}
	})
	t.Run("released by SetHang(false)", func(t *testing.T) {
		before := s.Requests()
		done := make(chan error, 1)
		go func() {
			_, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), req)
			done <- err
		}()
		if err := s.WaitRequests(ctxT(t, 5*time.Second), before+1); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("answered while hanging: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		s.SetHang(false)
		if err := <-done; err != nil {
			t.Fatalf("released request: %v", err)
		}
	})
	if s.Completed() != 1 {
		t.Errorf("Completed() = %d, want 1", s.Completed())
	}
}

func TestLatency(t *testing.T) {
	s := Start(t, WithLatency(300*time.Millisecond))
	req := openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}}

	start := time.Now()
	if _, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), req); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("answered after %v, want >= 300ms", d)
	}

	s.SetLatency(time.Hour)
	_, err := s.Client().CreateChatCompletion(ctxT(t, 100*time.Millisecond), req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want context.DeadlineExceeded", err)
	}
	// The handler noticed the client leaving and did not answer.
	time.Sleep(50 * time.Millisecond)
	if s.Completed() != 1 {
		t.Fatalf("Completed() = %d after a cancelled request, want 1", s.Completed())
	}
	s.SetLatency(0)
}

func TestRequestLog(t *testing.T) {
	s := Start(t)
	client := s.Client()
	history := []openai.ChatCompletionMessage{system("sys")}
	for _, q := range []string{"q1", "q2", "q3"} {
		history = append(history, user(q))
		resp, err := client.CreateChatCompletion(ctxT(t, 10*time.Second), openai.ChatCompletionRequest{Model: "m", Messages: history})
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, assistant(resp.Choices[0].Message.Content))
	}

	last := s.LastRequests(1)
	if len(last) != 1 || LastUserMessage(last[0]) != "q3" {
		t.Fatalf("LastRequests(1) = %+v", last)
	}
	if n := len(s.LastRequests(0)); n != 3 {
		t.Fatalf("LastRequests(0) has %d, want 3", n)
	}
	got := s.RequestsFor("q3")
	if len(got) != 1 {
		t.Fatalf("RequestsFor(q3) = %d requests, want 1", len(got))
	}
	var roles, contents []string
	for _, m := range got[0].Messages {
		roles = append(roles, m.Role)
		contents = append(contents, m.Content)
	}
	if want := []string{"system", "user", "assistant", "user", "assistant", "user"}; !slices.Equal(roles, want) {
		t.Errorf("roles = %v, want %v", roles, want)
	}
	if want := []string{"sys", "q1", "echo: q1", "q2", "echo: q2", "q3"}; !slices.Equal(contents, want) {
		t.Errorf("history = %v, want %v", contents, want)
	}
	if n := len(s.RequestsMatching(func(r openai.ChatCompletionRequest) bool { return len(r.Messages) > 2 })); n != 2 {
		t.Errorf("RequestsMatching(>2 messages) = %d, want 2", n)
	}

	s.Reset()
	if s.Requests() != 0 || s.Completed() != 0 || len(s.LastRequests(0)) != 0 {
		t.Errorf("after Reset: %d requests, %d completed, %d logged", s.Requests(), s.Completed(), len(s.LastRequests(0)))
	}
}

func TestRequestLogLimit(t *testing.T) {
	s := Start(t, WithRequestLog(4))
	for i := range 10 {
		if _, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), openai.ChatCompletionRequest{
			Model: "m", Messages: []openai.ChatCompletionMessage{user(fmt.Sprint(i))},
		}); err != nil {
			t.Fatal(err)
		}
	}
	got := s.LastRequests(0)
	if len(got) == 0 || len(got) > 4 || LastUserMessage(got[len(got)-1]) != "9" {
		t.Fatalf("kept %d requests, last %q; want at most 4 ending with 9", len(got), LastUserMessage(got[len(got)-1]))
	}
	if s.Requests() != 10 {
		t.Fatalf("Requests() = %d, want 10 regardless of the log limit", s.Requests())
	}
}

func TestModels(t *testing.T) {
	s := Start(t, WithAPIKey(testKey), WithModel("fake-model-1"))
	client := s.Client()
	list, err := client.ListModels(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatalf("ListModels: %v", err)
	}
	if len(list.Models) != 1 || list.Models[0].ID != "fake-model-1" || list.Models[0].Object != "model" {
		t.Fatalf("models = %+v", list.Models)
	}
	m, err := client.GetModel(ctxT(t, 10*time.Second), "fake-model-1")
	if err != nil || m.ID != "fake-model-1" {
		t.Fatalf("GetModel = %+v, %v", m, err)
	}
	_, err = client.GetModel(ctxT(t, 10*time.Second), "nope")
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 404 {
		t.Fatalf("GetModel(nope) error = %v, want 404", err)
	}
	cfg := openai.DefaultConfig("sk-wrong-key-000000")
	cfg.BaseURL = s.BaseURL()
	if _, err := openai.NewClientWithConfig(cfg).ListModels(ctxT(t, 10*time.Second)); !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 401 {
		t.Fatalf("ListModels with a wrong key: %v, want 401", err)
	}
}

func TestListenAndServe(t *testing.T) {
	s := New(WithAPIKey(testKey))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, "127.0.0.1:0") }()

	for s.BaseURL() == "" {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("ListenAndServe returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.HasPrefix(s.BaseURL(), "http://127.0.0.1:") || !strings.HasSuffix(s.BaseURL(), "/v1") {
		t.Fatalf("BaseURL() = %q", s.BaseURL())
	}
	resp, err := s.Client().CreateChatCompletion(ctxT(t, 10*time.Second), openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}})
	if err != nil || resp.Choices[0].Message.Content != "echo: hi" {
		t.Fatalf("completion = %+v, %v", resp, err)
	}

	// A hung request must not hold up shutdown.
	s.SetHang(true)
	hung := make(chan error, 1)
	go func() {
		_, err := s.Client().CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{Model: "m", Messages: []openai.ChatCompletionMessage{user("hi")}})
		hung <- err
	}()
	if err := s.WaitRequests(ctxT(t, 5*time.Second), 2); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not return after cancel")
	}
	if err := <-hung; err == nil {
		t.Fatal("hung request succeeded across shutdown")
	}
}

func TestListenAndServeBadAddr(t *testing.T) {
	err := New().ListenAndServe(context.Background(), "256.0.0.1:-5")
	if err == nil || !strings.Contains(err.Error(), "fakeopenai: listen") {
		t.Fatalf("error = %v", err)
	}
}

// Faults change while requests are in flight in the real tests; the race
// detector must find nothing.
func TestConcurrentFaults(t *testing.T) {
	s := Start(t)
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	var beforeReset int
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				req := openai.ChatCompletionRequest{Model: "m", Stream: j%2 == 0, Messages: []openai.ChatCompletionMessage{user(fmt.Sprintf("%d-%d", i, j))}}
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if req.Stream {
					if st, err := s.Client().CreateChatCompletionStream(rctx, req); err == nil {
						_, _ = streamAll(t, st)
					}
				} else {
					_, _ = s.Client().CreateChatCompletion(rctx, req)
				}
				cancel()
			}
		})
	}
	wg.Go(func() {
		for i := range 40 {
			s.SetLatency(time.Duration(i%3) * time.Millisecond)
			s.FailNext(1, 500, "1")
			s.CutNextStreams(1, 1)
			s.SetDown(i%5 == 0)
			s.SetHang(i%7 == 0)
			s.SetResponder(func(openai.ChatCompletionRequest) string { return "x y z" })
			s.SetStreamDelays(0, time.Millisecond)
			_ = s.LastRequests(3)
			if i == 20 {
				beforeReset = s.Requests()
				s.Reset()
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.SetDown(false)
		s.SetHang(false)
	})
	wg.Wait()
	if beforeReset+s.Requests() == 0 {
		t.Fatal("no requests reached the server")
	}
}

func TestBodyTooLarge(t *testing.T) {
	s := Start(t)
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a", maxBodyBytes) + `"}]}`
	resp, e := rawPost(t, s, "", big)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || e["type"] != "invalid_request_error" {
		t.Fatalf("status %d error %v; want 413 invalid_request_error", resp.StatusCode, e)
	}
}

func TestFailNextClampsStatus(t *testing.T) {
	s := Start(t)
	s.FailNext(1, http.StatusOK, "")
	resp, e := rawPost(t, s, "", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != http.StatusInternalServerError || e["type"] != "server_error" {
		t.Fatalf("status %d error %v; want 500 server_error", resp.StatusCode, e)
	}
}
