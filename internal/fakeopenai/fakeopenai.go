// Package fakeopenai is an OpenAI-compatible chat completions server for
// tests and load runs. It speaks the wire format the real API speaks (JSON
// and server-sent events, OpenAI-style error bodies), so the services run
// their real go-openai client against it, and it injects the faults the
// ai-consumer must survive: latency, rate limits, server errors, a dead
// server, a hung server and streams cut off half way.
//
// The default answer is deterministic ("echo: " + the last user message), so
// an end-to-end test can predict exactly what reaches the user.
package fakeopenai

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// DefaultModel is the model /v1/models lists unless WithModel says otherwise.
const DefaultModel = "gpt-4o-mini"

// DefaultRequestLog is how many received requests we keep for inspection.
// Load runs send far more; keeping them all would grow without bound.
const DefaultRequestLog = 10000

// maxBodyBytes caps a request body. The real API rejects huge bodies too,
// and a runaway client in a load run must not exhaust the test's memory.
const maxBodyBytes = 8 << 20

// Responder computes the answer text for a request.
type Responder func(req openai.ChatCompletionRequest) string

// Option configures a Server.
type Option func(*Server)

// WithAPIKey makes the server require "Authorization: Bearer key", so tests
// can check the services send the configured key. Without it any key, or
// none, is accepted.
func WithAPIKey(key string) Option { return func(s *Server) { s.apiKey = key } }

// WithModel sets the model /v1/models lists. Chat requests may name any
// model; the response echoes whatever the request asked for.
func WithModel(model string) Option { return func(s *Server) { s.model = model } }

// WithLatency sets the initial SetLatency.
func WithLatency(d time.Duration) Option { return func(s *Server) { s.latency = d } }

// WithStreamDelays sets the initial SetStreamDelays.
func WithStreamDelays(firstToken, betweenTokens time.Duration) Option {
	return func(s *Server) { s.firstToken, s.betweenTokens = firstToken, betweenTokens }
}

// WithResponder sets the initial SetResponder.
func WithResponder(fn Responder) Option { return func(s *Server) { s.responder = fn } }

// WithRequestLog keeps the last n requests for LastRequests and RequestsFor
// instead of DefaultRequestLog; 0 keeps none, for long load runs.
func WithRequestLog(n int) Option { return func(s *Server) { s.logLimit = max(n, 0) } }

// Server is the fake API. Every method is safe for concurrent use, so a test
// can change faults while the services are mid-request.
type Server struct {
	apiKey   string
	model    string
	logLimit int

	requests  atomic.Int64
	completed atomic.Int64
	seq       atomic.Int64

	closeOnce sync.Once
	closed    chan struct{} // releases every waiting handler on Close

	mu            sync.Mutex
	baseURL       string
	latency       time.Duration
	firstToken    time.Duration
	betweenTokens time.Duration
	responder     Responder
	failLeft      int
	failStatus    int
	failRetry     string
	cutLeft       int
	cutAfter      int
	cutClean      bool
	down          bool
	hang          bool
	unhang        chan struct{} // closed when SetHang(false) releases hung requests
	log           []openai.ChatCompletionRequest
	arrived       chan struct{} // closed and replaced on every request, for WaitRequests
}

// New returns a server that is not listening yet: serve Handler() yourself,
// or use ListenAndServe or Start.
func New(opts ...Option) *Server {
	s := &Server{
		model:    DefaultModel,
		logLimit: DefaultRequestLog,
		closed:   make(chan struct{}),
		unhang:   make(chan struct{}),
		arrived:  make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Start serves a new Server on a loopback httptest server until the test
// ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := New(opts...)
	ts := httptest.NewServer(s.Handler())
	s.setBaseURL(ts.URL + "/v1")
	t.Cleanup(func() {
		// Release hung and delayed handlers first: httptest's Close waits
		// for every in-flight request.
		s.Close()
		ts.Close()
	})
	return s
}

// ListenAndServe serves on addr (":0" picks a port; BaseURL tells which)
// until ctx is done, then shuts down gracefully. It returns nil after a
// shutdown caused by ctx.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fakeopenai: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is ListenAndServe on a listener the caller already opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.setBaseURL("http://" + dialable(ln.Addr().String()) + "/v1")
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("fakeopenai: serve: %w", err)
	case <-ctx.Done():
	}
	s.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("fakeopenai: serve: %w", err)
	}
	return nil
}

// dialable turns a listener address on all interfaces into one a client on
// the same machine can dial.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Close releases handlers that are hanging or sleeping, so the HTTP server
// around them can shut down. The handler keeps answering new requests.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

func (s *Server) setBaseURL(u string) {
	s.mu.Lock()
	s.baseURL = u
	s.mu.Unlock()
}

// BaseURL returns the URL for go-openai's ClientConfig.BaseURL, ending in
// /v1; it is empty until the server listens.
func (s *Server) BaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.baseURL
}

// ClientConfig returns a go-openai configuration pointing at the server and
// carrying its API key.
func (s *Server) ClientConfig() openai.ClientConfig {
	cfg := openai.DefaultConfig(s.apiKey)
	cfg.BaseURL = s.BaseURL()
	return cfg
}

// Client returns a go-openai client for the server.
func (s *Server) Client() *openai.Client {
	return openai.NewClientWithConfig(s.ClientConfig())
}

// SetLatency delays every chat completion by d before anything is sent,
// like a loaded upstream. A client that gives up stops the wait.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetStreamDelays sets, for streamed answers, the delay between the role
// chunk and the first content chunk (time to first token) and between
// content chunks, so tests can observe partial answers in flight.
func (s *Server) SetStreamDelays(firstToken, betweenTokens time.Duration) {
	s.mu.Lock()
	s.firstToken, s.betweenTokens = firstToken, betweenTokens
	s.mu.Unlock()
}

// SetResponder replaces the answer text; nil restores the echo.
func (s *Server) SetResponder(fn Responder) {
	s.mu.Lock()
	s.responder = fn
	s.mu.Unlock()
}

// FailNext makes the next n chat completion requests fail with status and an
// OpenAI error body of the matching type (429 rate_limit_error, 5xx
// server_error, ...), with a Retry-After header when retryAfter is not
// empty. n <= 0 cancels pending failures; a status outside 400-599 means
// 500, since a "failure" that looks like success would only confuse.
func (s *Server) FailNext(n, status int, retryAfter string) {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	s.mu.Lock()
	s.failLeft, s.failStatus, s.failRetry = max(n, 0), status, retryAfter
	s.mu.Unlock()
}

// CutNextStreams makes the next n streamed answers drop the connection after
// afterChunks content chunks, without the finish chunk or [DONE], as when
// the upstream dies mid-answer. n <= 0 cancels pending cuts.
func (s *Server) CutNextStreams(n, afterChunks int) { s.cutStreams(n, afterChunks, false) }

// EndNextStreams makes the next n streamed answers stop after afterChunks
// content chunks, without the finish chunk or [DONE], but with a proper end
// of the HTTP response: the client reads a clean end of body, not a broken
// connection, as behind a proxy that ends its own response when its
// upstream dies mid-answer. It replaces pending CutNextStreams, and the
// other way round; n <= 0 cancels pending ends.
func (s *Server) EndNextStreams(n, afterChunks int) { s.cutStreams(n, afterChunks, true) }

func (s *Server) cutStreams(n, afterChunks int, clean bool) {
	s.mu.Lock()
	s.cutLeft, s.cutAfter, s.cutClean = max(n, 0), max(afterChunks, 0), clean
	s.mu.Unlock()
}

// SetDown makes the server close every connection without answering, as a
// crashed upstream behind a load balancer does; clients see a transport
// error, never an HTTP status.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// SetHang makes chat completions wait without answering until the client
// gives up. SetHang(false) lets requests that are still waiting go on and
// answer normally.
func (s *Server) SetHang(hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hang == hang {
		return
	}
	s.hang = hang
	if !hang {
		close(s.unhang)
		s.unhang = make(chan struct{})
	}
}

// Reset clears every fault, the responder, the delays, the counters and the
// request log, so one server can serve several phases of a load run.
func (s *Server) Reset() {
	s.SetHang(false)
	s.mu.Lock()
	s.latency, s.firstToken, s.betweenTokens = 0, 0, 0
	s.responder = nil
	s.failLeft, s.cutLeft = 0, 0
	s.down = false
	s.log = nil
	s.mu.Unlock()
	s.requests.Store(0)
	s.completed.Store(0)
}

// Requests returns how many chat completion requests arrived, whatever
// became of them (failed, cut, dropped while down).
func (s *Server) Requests() int { return int(s.requests.Load()) }

// Completed returns how many chat completions were answered in full.
func (s *Server) Completed() int { return int(s.completed.Load()) }

// WaitRequests waits until at least n chat completion requests arrived, so a
// test can synchronise with a service that calls the API in the background.
func (s *Server) WaitRequests(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		ch := s.arrived
		s.mu.Unlock()
		if s.Requests() >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fakeopenai: %d of %d requests arrived: %w", s.Requests(), n, ctx.Err())
		}
	}
}

// LastRequests returns the last n valid requests received, oldest first, to
// check the conversation history the service sent; n <= 0 returns all that
// are kept. Requests that failed by FailNext or were cut are included: a
// retry shows up as a repeat.
func (s *Server) LastRequests(n int) []openai.ChatCompletionRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := 0
	if n > 0 && n < len(s.log) {
		start = len(s.log) - n
	}
	return append([]openai.ChatCompletionRequest(nil), s.log[start:]...)
}

// RequestsFor returns the kept requests whose last user message is content,
// oldest first: in a chat backend that identifies the turn of one
// conversation, whatever else is running concurrently.
func (s *Server) RequestsFor(content string) []openai.ChatCompletionRequest {
	return s.RequestsMatching(func(r openai.ChatCompletionRequest) bool {
		return LastUserMessage(r) == content
	})
}

// RequestsMatching returns the kept requests for which match is true.
func (s *Server) RequestsMatching(match func(openai.ChatCompletionRequest) bool) []openai.ChatCompletionRequest {
	var out []openai.ChatCompletionRequest
	for _, r := range s.LastRequests(0) {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// LastUserMessage returns the text of the request's last user message, or ""
// if it has none.
func LastUserMessage(req openai.ChatCompletionRequest) string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == openai.ChatMessageRoleUser {
			return messageText(req.Messages[i])
		}
	}
	return ""
}

// Echo is the default responder.
func Echo(req openai.ChatCompletionRequest) string {
	return "echo: " + LastUserMessage(req)
}

// CountTokens is the fake's token count: words, which is close enough for
// tests of usage accounting and cheap enough for load runs.
func CountTokens(s string) int { return len(strings.Fields(s)) }

func messageText(m openai.ChatCompletionMessage) string {
	if len(m.MultiContent) == 0 {
		return m.Content
	}
	var parts []string
	for _, p := range m.MultiContent {
		if p.Type == openai.ChatMessagePartTypeText {
			parts = append(parts, p.Text)
		}
	}
	return strings.Join(parts, " ")
}

// Handler returns the HTTP handler serving /v1.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("GET /v1/models/{model}", s.handleModel)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", nil,
			fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path))
	})
	return mux
}

// authorized answers 401 itself when the key is wrong.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if e := s.checkKey(r); e != nil {
		e.write(w)
		return false
	}
	return true
}

func (s *Server) checkKey(r *http.Request) *errorReply {
	if s.apiKey == "" {
		return nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return &errorReply{http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."}
	}
	if got != s.apiKey {
		return &errorReply{http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			fmt.Sprintf("Incorrect API key provided: %s.", redact(got))}
	}
	return nil
}

// errorReply is an OpenAI error response decided before it is written, so
// the request counter can move first: a test that saw the error must also
// see the count.
type errorReply struct {
	status int
	typ    string
	code   any
	msg    string
}

func (e *errorReply) write(w http.ResponseWriter) { writeError(w, e.status, e.typ, e.code, e.msg) }

// redact shows only the ends of a key, as the real API does, so keys do not
// end up whole in test logs.
func redact(key string) string {
	if len(key) <= 8 {
		return "***"
	}
	return key[:3] + "*****" + key[len(key)-4:]
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []modelObject{newModelObject(s.model)},
	})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	if id := r.PathValue("model"); id != s.model {
		writeError(w, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("The model '%s' does not exist or you do not have access to it.", id))
		return
	}
	writeJSON(w, http.StatusOK, newModelObject(s.model))
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func newModelObject(id string) modelObject {
	return modelObject{ID: id, Object: "model", Created: 1700000000, OwnedBy: "fakeopenai"}
}

// faults is a snapshot of the settings one request runs under, taken once so
// a concurrent change applies to the next request, not half of this one.
type faults struct {
	latency       time.Duration
	firstToken    time.Duration
	betweenTokens time.Duration
	responder     Responder
	failStatus    int
	failRetry     string
	cutAfter      int  // -1: do not cut
	cutClean      bool // end the response properly at the cut instead of dropping the connection
	hang          bool
	unhang        chan struct{}
}

// take consumes this request's share of FailNext and CutNextStreams.
func (s *Server) take(stream bool) faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := faults{
		latency:       s.latency,
		firstToken:    s.firstToken,
		betweenTokens: s.betweenTokens,
		responder:     s.responder,
		cutAfter:      -1,
		hang:          s.hang,
		unhang:        s.unhang,
	}
	if s.failLeft > 0 {
		s.failLeft--
		f.failStatus, f.failRetry = s.failStatus, s.failRetry
	}
	if stream && f.failStatus == 0 && s.cutLeft > 0 {
		s.cutLeft--
		f.cutAfter, f.cutClean = s.cutAfter, s.cutClean
	}
	return f
}

func (s *Server) arrive() {
	s.requests.Add(1)
	s.mu.Lock()
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) record(req openai.ChatCompletionRequest) {
	if s.logLimit == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.log) >= s.logLimit {
		// Drop the oldest half at once: amortised O(1) instead of
		// shifting the whole log on every request.
		s.log = append(s.log[:0], s.log[len(s.log)-s.logLimit/2:]...)
	}
	s.log = append(s.log, req)
}

func (s *Server) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	// Every path counts the request before it answers, so a client that
	// has its answer (or error) also sees it in Requests and the log.
	if s.isDown() {
		s.arrive()
		dropConnection(w)
		return
	}
	if e := s.checkKey(r); e != nil {
		s.arrive()
		e.write(w)
		return
	}
	req, e := decodeRequest(w, r)
	if e != nil {
		s.arrive()
		e.write(w)
		return
	}
	s.record(req)
	s.arrive()
	f := s.take(req.Stream)
	ctx := r.Context()

	if f.hang {
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			dropConnection(w)
			return
		case <-f.unhang:
		}
	}
	if f.failStatus != 0 {
		writeFault(w, f.failStatus, f.failRetry)
		return
	}
	if !s.wait(ctx, w, f.latency) {
		return
	}

	answer := Echo(req)
	if f.responder != nil {
		answer = f.responder(req)
	}
	pieces, finish := splitAnswer(answer, maxTokens(req))
	c := completion{
		id:      s.newID(),
		created: time.Now().Unix(),
		model:   req.Model,
		usage: usage{
			PromptTokens:     promptTokens(req),
			CompletionTokens: CountTokens(strings.Join(pieces, "")),
		},
	}
	c.usage.TotalTokens = c.usage.PromptTokens + c.usage.CompletionTokens
	w.Header().Set("X-Request-Id", "req_"+c.id)

	if req.Stream {
		includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
		s.stream(ctx, w, c, pieces, finish, includeUsage, f)
		return
	}
	s.completed.Add(1) // before the write, for the same reason as arrive
	writeJSON(w, http.StatusOK, chatResponse{
		ID:      c.id,
		Object:  "chat.completion",
		Created: c.created,
		Model:   c.model,
		Choices: []chatChoice{{
			Message:      responseMessage{Role: openai.ChatMessageRoleAssistant, Content: strings.Join(pieces, "")},
			FinishReason: finish,
		}},
		Usage:             &c.usage,
		SystemFingerprint: systemFingerprint,
	})
}

// decodeRequest rejects, with the messages the real API uses, a body the
// real API would reject.
func decodeRequest(w http.ResponseWriter, r *http.Request) (openai.ChatCompletionRequest, *errorReply) {
	var req openai.ChatCompletionRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		status := http.StatusBadRequest // the client went away mid-body; nobody reads this
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			status = http.StatusRequestEntityTooLarge
		}
		return req, &errorReply{status, "invalid_request_error", nil,
			fmt.Sprintf("Could not read the request body: %v.", err)}
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return req, &errorReply{http.StatusBadRequest, "invalid_request_error", nil,
			"We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"}
	}
	if req.Model == "" {
		return req, &errorReply{http.StatusBadRequest, "invalid_request_error", nil,
			"you must provide a model parameter"}
	}
	if len(req.Messages) == 0 {
		return req, &errorReply{http.StatusBadRequest, "invalid_request_error", nil,
			"[] is too short - 'messages'"}
	}
	for i, m := range req.Messages {
		switch m.Role {
		case openai.ChatMessageRoleSystem, openai.ChatMessageRoleUser, openai.ChatMessageRoleAssistant,
			openai.ChatMessageRoleTool, openai.ChatMessageRoleFunction, openai.ChatMessageRoleDeveloper:
		default:
			return req, &errorReply{http.StatusBadRequest, "invalid_request_error", nil,
				fmt.Sprintf("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'. (messages[%d].role)", m.Role, i)}
		}
	}
	return req, nil
}

func maxTokens(req openai.ChatCompletionRequest) int {
	if req.MaxCompletionTokens > 0 {
		return req.MaxCompletionTokens
	}
	return req.MaxTokens
}

func promptTokens(req openai.ChatCompletionRequest) int {
	n := 0
	for _, m := range req.Messages {
		n += CountTokens(messageText(m))
	}
	return n
}

// splitAnswer cuts the answer into word pieces that concatenate back to it
// exactly; each piece is one streamed chunk and one "token". A positive
// limit truncates the answer to that many pieces with finish_reason
// "length", as max_tokens does upstream.
func splitAnswer(answer string, limit int) ([]string, string) {
	var pieces []string
	for p := range strings.SplitAfterSeq(answer, " ") {
		if p != "" {
			pieces = append(pieces, p)
		}
	}
	if limit > 0 && len(pieces) > limit {
		return pieces[:limit], "length"
	}
	return pieces, "stop"
}

// wait sleeps d unless the client leaves or the server closes first, and
// reports whether the request should go on. On close it drops the
// connection: returning from the handler would end the response cleanly,
// and a client must never take a half answer for a whole one.
func (s *Server) wait(ctx context.Context, w http.ResponseWriter, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closed:
		dropConnection(w)
		return false
	}
}

func (s *Server) newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return fmt.Sprintf("chatcmpl-%s%d", hex.EncodeToString(b[:]), s.seq.Add(1))
}

// completion is what a non-streamed and a streamed answer share.
type completion struct {
	id      string
	created int64
	model   string
	usage   usage
}

// stream writes the answer as server-sent events, counting it as completed
// if it gets to [DONE].
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, c completion, pieces []string, finish string, includeUsage bool, f faults) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)

	chunk := func(delta *chunkDelta, finish *string, u *usage) bool {
		ch := chatChunk{
			ID:                c.id,
			Object:            "chat.completion.chunk",
			Created:           c.created,
			Model:             c.model,
			SystemFingerprint: systemFingerprint,
			Choices:           []chunkChoice{},
		}
		if delta != nil {
			ch.Choices = append(ch.Choices, chunkChoice{Delta: *delta, FinishReason: finish})
		}
		if includeUsage {
			ch.Usage = &nullableUsage{u}
		}
		b, err := json.Marshal(ch)
		if err != nil {
			return false // cannot happen with these types; stop rather than send garbage
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}

	role := openai.ChatMessageRoleAssistant
	empty := ""
	if !chunk(&chunkDelta{Role: role, Content: &empty}, nil, nil) {
		return
	}
	for i, p := range pieces {
		if i == f.cutAfter {
			f.cut(w)
			return
		}
		wait := f.betweenTokens
		if i == 0 {
			wait = f.firstToken
		}
		if !s.wait(ctx, w, wait) || !chunk(&chunkDelta{Content: &p}, nil, nil) {
			return
		}
	}
	if f.cutAfter >= 0 && f.cutAfter >= len(pieces) {
		// Cut after the last content chunk: the answer looks complete
		// but never finishes, the hardest case for a consumer.
		f.cut(w)
		return
	}
	if !chunk(&chunkDelta{}, &finish, nil) || (includeUsage && !chunk(nil, nil, &c.usage)) {
		return
	}
	// Counted before [DONE] reaches the client, and taken back if it
	// cannot be sent, so a client that finished sees the count.
	s.completed.Add(1)
	if _, err := io.WriteString(w, "data: [DONE]\n\n"); err != nil || rc.Flush() != nil {
		s.completed.Add(-1)
	}
}

// cut ends a stream at a cut: returning from the handler makes net/http end
// the response properly (the terminating chunk), so the client sees a clean
// end of body; dropping the connection makes it see a broken one.
func (f faults) cut(w http.ResponseWriter) {
	if !f.cutClean {
		dropConnection(w)
	}
}

// dropConnection closes the TCP connection without a response, or mid-body
// if one started. If the connection cannot be hijacked (HTTP/2) we abort the
// handler, which net/http turns into a reset stream: the sanctioned panic
// value, not a crash.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// RST instead of FIN, as a crashed process's kernel sends.
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

const systemFingerprint = "fp_fakeopenai"

// Wire types. We write our own instead of reusing go-openai's so the bytes
// on the wire follow the API reference (nulls included), and the go-openai
// client in the tests proves they decode.
type (
	usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}

	// nullableUsage marshals a nil usage as null: with include_usage,
	// every chunk but the last carries "usage": null.
	nullableUsage struct{ u *usage }

	responseMessage struct {
		Role    string  `json:"role"`
		Content string  `json:"content"`
		Refusal *string `json:"refusal"`
	}

	chatChoice struct {
		Index        int             `json:"index"`
		Message      responseMessage `json:"message"`
		Logprobs     *struct{}       `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
	}

	chatResponse struct {
		ID                string       `json:"id"`
		Object            string       `json:"object"`
		Created           int64        `json:"created"`
		Model             string       `json:"model"`
		Choices           []chatChoice `json:"choices"`
		Usage             *usage       `json:"usage"`
		SystemFingerprint string       `json:"system_fingerprint"`
	}

	chunkDelta struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content,omitempty"`
	}

	chunkChoice struct {
		Index        int        `json:"index"`
		Delta        chunkDelta `json:"delta"`
		Logprobs     *struct{}  `json:"logprobs"`
		FinishReason *string    `json:"finish_reason"`
	}

	chatChunk struct {
		ID                string         `json:"id"`
		Object            string         `json:"object"`
		Created           int64          `json:"created"`
		Model             string         `json:"model"`
		SystemFingerprint string         `json:"system_fingerprint"`
		Choices           []chunkChoice  `json:"choices"`
		Usage             *nullableUsage `json:"usage,omitempty"`
	}

	apiError struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    any     `json:"code"`
	}
)

func (n nullableUsage) MarshalJSON() ([]byte, error) {
	if n.u == nil {
		return []byte("null"), nil
	}
	return json.Marshal(n.u)
}

// writeFault writes the error the real API sends for status.
func writeFault(w http.ResponseWriter, status int, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	switch {
	case status == http.StatusTooManyRequests:
		writeError(w, status, "rate_limit_error", "rate_limit_exceeded",
			"Rate limit reached for requests. Please try again later.")
	case status == http.StatusUnauthorized:
		writeError(w, status, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.")
	case status == http.StatusServiceUnavailable:
		writeError(w, status, "server_error", nil,
			"The engine is currently overloaded, please try again later.")
	case status >= 500:
		writeError(w, status, "server_error", nil,
			"The server had an error while processing your request. Sorry about that!")
	default:
		writeError(w, status, "invalid_request_error", nil, http.StatusText(status))
	}
}

func writeError(w http.ResponseWriter, status int, typ string, code any, msg string) {
	writeJSON(w, status, map[string]apiError{"error": {Message: msg, Type: typ, Code: code}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "fakeopenai: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
