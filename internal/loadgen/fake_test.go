package loadgen

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/auth"
)

const testSecret = "loadgen-test-secret-0123456789"

// TestMain lets the test binary act as a -procs worker.
func TestMain(m *testing.M) {
	if IsWorker() {
		os.Exit(Main(nil, os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(m.Run())
}

// action is what the fake server does with one message.
type action struct {
	drop        bool          // ack, never answer
	duplicate   bool          // send the same response twice
	twoAnswers  bool          // send two responses with different ids
	delay       time.Duration // answer after this long
	errorAfter  string        // ack, then answer with this error (reply_to set)
	refuse      string        // no ack: an error naming the client id
	answerFirst bool          // the response overtakes the ack
}

// fakeChat is an in-process chat server speaking the real protocol with
// behaviour the test controls, plus a /metrics endpoint.
type fakeChat struct {
	t   *testing.T
	srv *httptest.Server

	// set before the first connection
	plan          func(n int) action // by arrival number, 1-based
	respDelay     time.Duration
	withClientID  bool // echo client_id in responses (the real server does)
	withCursor    bool // responses carry a history cursor (the real server does)
	writeBufSize  int  // small: the server fragments long frames
	answerSize    int
	pingEvery     time.Duration
	refuseUser    func(userID string) int // HTTP status to refuse with, 0 to accept
	closeFirstAt  int                     // close a user's first socket with 1001 after this many responses
	expectContent int                     // content length every message must have

	n         atomic.Int64
	open      atomic.Int64
	pongs     atomic.Int64
	badFrames atomic.Int64

	mu       sync.Mutex
	arrivals []time.Time
	queries  map[string][]url.Values // by user: every connection's query
	lastResp map[string]string       // by user: the resume cursor (or response id) last sent on the first socket
}

func newFakeChat(t *testing.T, setup func(*fakeChat)) *fakeChat {
	f := &fakeChat{t: t, queries: map[string][]url.Values{}, lastResp: map[string]string{}, writeBufSize: 1024, answerSize: 40}
	if setup != nil {
		setup(f)
	}
	verifier, err := auth.NewVerifier([]byte(testSecret), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: f.writeBufSize}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		userID := q.Get("userid")
		if err := verifier.Verify(q.Get("token"), userID); err != nil {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if f.refuseUser != nil {
			if code := f.refuseUser(userID); code != 0 {
				http.Error(w, "refused", code)
				return
			}
		}
		f.mu.Lock()
		f.queries[userID] = append(f.queries[userID], q)
		first := len(f.queries[userID]) == 1
		f.mu.Unlock()
		// Counted before the 101 goes out, so that a client that has its
		// socket finds it counted.
		f.open.Add(1)
		defer f.open.Add(-1)
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.serve(ws, userID, first)
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 42\n"+
			"process_resident_memory_bytes %d\nchat_ws_connections{service=\"websocket-server\"} %d\nother_metric 7\n",
			10<<20+f.open.Load()*10<<10, f.open.Load())
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeChat) wsURL() string      { return "ws" + strings.TrimPrefix(f.srv.URL, "http") }
func (f *fakeChat) metricsURL() string { return f.srv.URL + "/metrics" }

type clientMsg struct {
	Type    string `json:"type"`
	Content string `json:"content"`
	UserID  string `json:"userid"`
	ID      string `json:"id"`
}

func (f *fakeChat) serve(ws *websocket.Conn, userID string, first bool) {
	var wmu sync.Mutex
	closed := make(chan struct{})
	defer close(closed)
	write := func(v any) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = ws.WriteJSON(v)
	}
	ws.SetPongHandler(func(string) error { f.pongs.Add(1); return nil })
	if f.pingEvery > 0 {
		go func() {
			t := time.NewTicker(f.pingEvery)
			defer t.Stop()
			for {
				select {
				case <-closed:
					return
				case <-t.C:
					wmu.Lock()
					_ = ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second))
					wmu.Unlock()
				}
			}
		}()
	}
	var responses atomic.Int64
	var closing atomic.Bool
	respond := func(m clientMsg, msgID, respID string) {
		resp := map[string]string{"type": "response", "id": respID, "reply_to": msgID, "userid": userID,
			"content": strings.Repeat("a", f.answerSize)}
		if f.withClientID {
			resp["client_id"] = m.ID
		}
		cursor := respID
		if f.withCursor {
			cursor = fmt.Sprintf("%d-%d", 1000+responses.Load(), len(respID))
			resp["cursor"] = cursor
		}
		write(resp)
		if first && f.closeFirstAt > 0 && responses.Add(1) == int64(f.closeFirstAt) && closing.CompareAndSwap(false, true) {
			f.mu.Lock()
			f.lastResp[userID] = cursor
			f.mu.Unlock()
			wmu.Lock()
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutdown"), time.Now().Add(time.Second))
			wmu.Unlock()
			_ = ws.Close()
		}
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var m clientMsg
		if err := json.Unmarshal(data, &m); err != nil || m.Type != "message" || m.UserID != userID ||
			(f.expectContent > 0 && len(m.Content) != f.expectContent) {
			f.badFrames.Add(1)
			continue
		}
		if closing.Load() {
			continue
		}
		n := int(f.n.Add(1))
		f.mu.Lock()
		f.arrivals = append(f.arrivals, time.Now())
		f.mu.Unlock()
		var a action
		if f.plan != nil {
			a = f.plan(n)
		}
		msgID, respID := fmt.Sprintf("m-%d", n), fmt.Sprintf("r-%d", n)
		ack := map[string]string{"type": "ack", "id": msgID, "client_id": m.ID, "userid": userID}
		if a.refuse != "" {
			write(map[string]string{"type": "error", "message": a.refuse, "client_id": m.ID, "userid": userID})
			continue
		}
		if a.answerFirst {
			respond(m, msgID, respID)
			write(ack)
			continue
		}
		write(ack)
		if a.drop {
			continue
		}
		answer := func() {
			select {
			case <-closed:
				return
			default:
			}
			switch {
			case a.errorAfter != "":
				write(map[string]string{"type": "error", "message": a.errorAfter, "reply_to": msgID, "userid": userID})
			case a.duplicate:
				respond(m, msgID, respID)
				respond(m, msgID, respID)
			case a.twoAnswers:
				respond(m, msgID, respID)
				respond(m, msgID, respID+"-bis")
			default:
				respond(m, msgID, respID)
			}
		}
		if d := f.respDelay + a.delay; d > 0 {
			time.AfterFunc(d, answer)
		} else {
			answer()
		}
	}
}

// testConfig is a small run against f.
func testConfig(f *fakeChat) Config {
	c := DefaultConfig()
	c.URLs = []string{f.wsURL()}
	c.MetricsURLs = []string{f.metricsURL()}
	c.Secret = testSecret
	c.Users = 4
	c.Ramp = 1000
	c.Duration = time.Second
	c.Drain = 2 * time.Second
	c.Progress = 0
	c.Settle = 100 * time.Millisecond
	c.ScrapeInterval = 100 * time.Millisecond
	c.Senders = 4
	return c
}
