package testinfra

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeGateway is a tiny stand-in for a websocket-server instance: it echoes
// WebSocket messages on /ws, answers /healthz and reports what it saw on any
// other path.
type fakeGateway struct {
	name string
	srv  *httptest.Server

	mu       sync.Mutex
	requests []seenRequest
}

type seenRequest struct {
	Path           string `json:"path"`
	Query          string `json:"query"`
	RequestID      string `json:"request_id"`
	RealIP         string `json:"real_ip"`
	ForwardedFor   string `json:"forwarded_for"`
	ForwardedProto string `json:"forwarded_proto"`
	Host           string `json:"host"`
	ForwardedHost  string `json:"forwarded_host"`
	Gateway        string `json:"gateway"`
}

func startFakeGateway(t *testing.T, name string) *fakeGateway {
	t.Helper()
	g := &fakeGateway{name: name}
	upgrader := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		g.record(r)
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			reply := fmt.Sprintf("%s:%s:%s", g.name, r.Header.Get("X-Request-ID"), msg)
			if err := conn.WriteMessage(mt, []byte(reply)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		g.record(r)
		_, _ = io.WriteString(w, "gateway ok "+g.name)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(g.record(r))
	})
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) record(r *http.Request) seenRequest {
	s := seenRequest{
		Path:           r.URL.Path,
		Query:          r.URL.RawQuery,
		RequestID:      r.Header.Get("X-Request-ID"),
		RealIP:         r.Header.Get("X-Real-IP"),
		ForwardedFor:   r.Header.Get("X-Forwarded-For"),
		ForwardedProto: r.Header.Get("X-Forwarded-Proto"),
		Host:           r.Host,
		ForwardedHost:  r.Header.Get("X-Forwarded-Host"),
		Gateway:        g.name,
	}
	g.mu.Lock()
	g.requests = append(g.requests, s)
	g.mu.Unlock()
	return s
}

func (g *fakeGateway) seen() []seenRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]seenRequest(nil), g.requests...)
}

func (g *fakeGateway) addr() string { return g.srv.Listener.Addr().String() }

func getJSON(t *testing.T, url string, header map[string]string) (seenRequest, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	var s seenRequest
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("GET %s: body %q: %v", url, body, err)
	}
	return s, resp
}

func wsEcho(t *testing.T, nginx *Nginx, requestID, msg string) string {
	t.Helper()
	h := http.Header{}
	if requestID != "" {
		h.Set("X-Request-ID", requestID)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial("ws://"+nginx.Addr()+"/ws?token=tok&userid=alice", h)
	if err != nil {
		status := ""
		if resp != nil {
			status = resp.Status
		}
		t.Fatalf("websocket dial through nginx: %v %s", err, status)
	}
	defer conn.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status %s", resp.Status)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, got, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	return string(got)
}

var generatedRequestID = regexp.MustCompile(`^[0-9a-f]{32}$`)

type accessLogLine struct {
	RequestID            string  `json:"request_id"`
	URI                  string  `json:"uri"`
	Status               int     `json:"status"`
	RequestTime          float64 `json:"request_time"`
	UpstreamAddr         string  `json:"upstream_addr"`
	UpstreamStatus       string  `json:"upstream_status"`
	UpstreamResponseTime string  `json:"upstream_response_time"`
}

// accessLogLines parses nginx's access log, failing on a line that is not
// valid JSON.
func accessLogLines(t *testing.T, n *Nginx) []accessLogLine {
	t.Helper()
	var out []accessLogLine
	for _, l := range strings.Split(strings.TrimSpace(n.AccessLog()), "\n") {
		if l == "" {
			continue
		}
		var a accessLogLine
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Fatalf("access log line is not JSON: %v\n%s", err, l)
		}
		out = append(out, a)
	}
	return out
}

// waitAccessLog waits for a line matching pred (WebSocket lines are written
// when the connection closes).
func waitAccessLog(t *testing.T, n *Nginx, what string, pred func(accessLogLine) bool) accessLogLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range accessLogLines(t, n) {
			if pred(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line for %s:\n%s", what, n.AccessLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNginxConfigSyntax(t *testing.T) {
	out := NginxTest(t, []string{"127.0.0.1:18081", "127.0.0.1:18082"})
	if !strings.Contains(out, "test is successful") {
		t.Fatalf("nginx -t output:\n%s", out)
	}
}

func TestDeriveNginxConfig(t *testing.T) {
	conf := []byte(`user nginx;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
http {
    client_body_temp_path /a; proxy_temp_path /b;
    fastcgi_temp_path /c;
    uwsgi_temp_path /d;
    scgi_temp_path /e;
    access_log /var/log/nginx/access.log json;
    upstream u {
        # BEGIN upstream servers
        server gw-1:8080 max_fails=1;
        server gw-2:8080 max_fails=1;
        # END upstream servers
    }
    server {
        listen 80;
        location = /x { access_log off; }
    }
}
`)
	ups, err := ParseNginxUpstreams(conf)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 || ups[0].Addr != "gw-1:8080" || ups[1].Addr != "gw-2:8080" || ups[0].Params != "max_fails=1" {
		t.Fatalf("upstreams = %+v", ups)
	}
	// Two temp paths share a line above: the rewrite is line-based, so this
	// form must be rejected rather than half-rewritten.
	if _, err := DeriveNginxConfig(conf, "/tmp/x", "127.0.0.1:1", []string{"127.0.0.1:2"}); err == nil {
		t.Fatal("want an error for temp paths the rewrite cannot see")
	}
	conf = []byte(strings.Replace(string(conf), "/a; proxy_temp_path /b;", "/a;\n    proxy_temp_path /b;", 1))
	got, err := DeriveNginxConfig(conf, "/tmp/x", "127.0.0.1:1", []string{"127.0.0.1:2", "127.0.0.1:3"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(got.Conf)
	for _, want := range []string{
		"listen 127.0.0.1:1;",
		"server 127.0.0.1:2 max_fails=1;",
		"server 127.0.0.1:3 max_fails=1;",
		"pid /tmp/x/nginx.pid;",
		"error_log /tmp/x/error.log info;",
		"access_log /tmp/x/access.log json;",
		"access_log off;",
		"proxy_temp_path /tmp/x/temp/proxy;",
		"scgi_temp_path /tmp/x/temp/scgi;",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("derived config lacks %q:\n%s", want, s)
		}
	}
	for _, gone := range []string{"gw-1", "gw-2", "user nginx", "/var/log", "listen 80"} {
		if strings.Contains(s, gone) {
			t.Errorf("derived config still has %q:\n%s", gone, s)
		}
	}

	if _, err := DeriveNginxConfig([]byte("include /etc/nginx/mime.types;\n"+string(conf)), "/tmp/x", "127.0.0.1:1", []string{"a:1"}); err == nil {
		t.Error("want an error for include")
	}
	if _, err := DeriveNginxConfig([]byte(strings.ReplaceAll(string(conf), "# END upstream servers", "")), "/tmp/x", "127.0.0.1:1", []string{"a:1"}); err == nil {
		t.Error("want an error for a missing marker")
	}
}

func TestNginxProxiesToGateways(t *testing.T) {
	a := startFakeGateway(t, "gw-a")
	b := startFakeGateway(t, "gw-b")
	nginx := StartNginx(t, []string{a.addr(), b.addr()})
	base := nginx.URL()

	t.Run("healthz answered by nginx", func(t *testing.T) {
		before := len(a.seen()) + len(b.seen())
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
			t.Fatalf("/healthz = %s %q", resp.Status, body)
		}
		if after := len(a.seen()) + len(b.seen()); after != before {
			t.Fatalf("/healthz reached a gateway")
		}
	})

	t.Run("upstream-healthz proxied to gateway /healthz", func(t *testing.T) {
		resp, err := http.Get(base + "/upstream-healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "gateway ok ") {
			t.Fatalf("/upstream-healthz = %s %q", resp.Status, body)
		}
	})

	t.Run("round robin over both gateways", func(t *testing.T) {
		count := map[string]int{}
		for i := 0; i < 10; i++ {
			s, _ := getJSON(t, base+"/chat?i="+fmt.Sprint(i), nil)
			if s.Path != "/chat" {
				t.Fatalf("gateway saw path %q", s.Path)
			}
			count[s.Gateway]++
		}
		if count["gw-a"] == 0 || count["gw-b"] == 0 {
			t.Fatalf("requests per gateway = %v, want both used", count)
		}
	})

	t.Run("generated request id", func(t *testing.T) {
		s, resp := getJSON(t, base+"/", nil)
		if !generatedRequestID.MatchString(s.RequestID) {
			t.Fatalf("gateway got X-Request-ID %q, want nginx's 32 hex digits", s.RequestID)
		}
		if got := resp.Header.Get("X-Request-ID"); got != s.RequestID {
			t.Fatalf("response X-Request-ID %q, gateway saw %q", got, s.RequestID)
		}
		s2, _ := getJSON(t, base+"/", nil)
		if s2.RequestID == s.RequestID {
			t.Fatalf("two requests got the same id %q", s.RequestID)
		}
	})

	t.Run("client request id kept", func(t *testing.T) {
		s, resp := getJSON(t, base+"/", map[string]string{"X-Request-ID": "client-req-42"})
		if s.RequestID != "client-req-42" {
			t.Fatalf("gateway got X-Request-ID %q, want the client's", s.RequestID)
		}
		if got := resp.Header.Get("X-Request-ID"); got != "client-req-42" {
			t.Fatalf("response X-Request-ID %q", got)
		}
	})

	t.Run("malformed client request id replaced", func(t *testing.T) {
		s, _ := getJSON(t, base+"/", map[string]string{"X-Request-ID": `bad id "with" quotes`})
		if !generatedRequestID.MatchString(s.RequestID) {
			t.Fatalf("gateway got X-Request-ID %q, want a generated one", s.RequestID)
		}
	})

	t.Run("forwarding headers", func(t *testing.T) {
		s, _ := getJSON(t, base+"/", map[string]string{"X-Forwarded-For": "203.0.113.7"})
		if s.RealIP != "127.0.0.1" {
			t.Errorf("X-Real-IP = %q", s.RealIP)
		}
		if s.ForwardedFor != "203.0.113.7, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", s.ForwardedFor)
		}
		if s.ForwardedProto != "http" {
			t.Errorf("X-Forwarded-Proto = %q", s.ForwardedProto)
		}
	})

	t.Run("websocket upgrade echoes", func(t *testing.T) {
		gateways := map[string]bool{}
		for i := 0; i < 4; i++ {
			got := wsEcho(t, nginx, "ws-req-"+fmt.Sprint(i), "hello")
			parts := strings.SplitN(got, ":", 3)
			if len(parts) != 3 || parts[1] != "ws-req-"+fmt.Sprint(i) || parts[2] != "hello" {
				t.Fatalf("echo = %q", got)
			}
			gateways[parts[0]] = true
		}
		if len(gateways) != 2 {
			t.Errorf("websockets went to %v, want both gateways", gateways)
		}
		var wsSeen []seenRequest
		for _, r := range append(a.seen(), b.seen()...) {
			if r.Path == "/ws" {
				wsSeen = append(wsSeen, r)
			}
		}
		if len(wsSeen) != 4 || wsSeen[0].Query != "token=tok&userid=alice" {
			t.Fatalf("gateways saw ws handshakes %+v", wsSeen)
		}
		// Generated id on a WebSocket handshake too.
		got := wsEcho(t, nginx, "", "x")
		if id := strings.SplitN(got, ":", 3)[1]; !generatedRequestID.MatchString(id) {
			t.Fatalf("ws handshake without X-Request-ID: gateway saw %q", id)
		}
		l := waitAccessLog(t, nginx, "websocket ws-req-0", func(l accessLogLine) bool { return l.RequestID == "ws-req-0" })
		if l.Status != http.StatusSwitchingProtocols || l.URI != "/ws" {
			t.Fatalf("ws access log line = %+v", l)
		}
	})

	t.Run("json access log", func(t *testing.T) {
		l := waitAccessLog(t, nginx, "client-req-42", func(l accessLogLine) bool { return l.RequestID == "client-req-42" })
		if l.UpstreamAddr != a.addr() && l.UpstreamAddr != b.addr() {
			t.Errorf("upstream_addr = %q, want one of the gateways", l.UpstreamAddr)
		}
		if l.Status != 200 || l.UpstreamStatus != "200" || l.UpstreamResponseTime == "" || l.RequestTime < 0 {
			t.Errorf("access log line = %+v", l)
		}
		for _, l := range accessLogLines(t, nginx) {
			if l.URI == "/healthz" {
				t.Errorf("/healthz is logged: %+v", l)
			}
		}
	})
}

func TestNginxSkipsDeadGateway(t *testing.T) {
	a := startFakeGateway(t, "gw-a")
	b := startFakeGateway(t, "gw-b")
	nginx := StartNginx(t, []string{a.addr(), b.addr()})
	deadAddr := b.addr()
	b.srv.Close()

	for i := 0; i < 6; i++ {
		s, _ := getJSON(t, nginx.URL()+"/", map[string]string{"X-Request-ID": fmt.Sprintf("dead-%d", i)})
		if s.Gateway != "gw-a" {
			t.Fatalf("request %d answered by %s", i, s.Gateway)
		}
	}
	if got := wsEcho(t, nginx, "ws-dead", "still here"); got != "gw-a:ws-dead:still here" {
		t.Fatalf("echo = %q", got)
	}
	// At least the first request tried the dead gateway and was passed on.
	l := waitAccessLog(t, nginx, "a retried request", func(l accessLogLine) bool {
		return strings.Contains(l.UpstreamAddr, deadAddr+", "+a.addr())
	})
	if l.Status != 200 || !strings.HasSuffix(l.UpstreamStatus, "200") {
		t.Fatalf("retried request log line = %+v", l)
	}
}

// clientFrom is an HTTP client whose connections come from the loopback
// address src (any 127.0.0.0/8 address works on Linux), so a test can stand
// for a client other than 127.0.0.1, which nginx.conf exempts from limits.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
}

func statusOf(t *testing.T, c *http.Client, url string) (int, http.Header) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestNginxLimitsConnectAttemptsPerIP(t *testing.T) {
	a := startFakeGateway(t, "gw-a")
	b := startFakeGateway(t, "gw-b")
	nginx := StartNginx(t, []string{a.addr(), b.addr()})
	url := nginx.URL() + "/ws?userid=alice&token=tok"

	// A burst of 60 handshake attempts from one address: the first 21
	// (burst 20 + the one the rate allows) reach a gateway (the fake
	// answers a non-upgrade GET with 400), the rest are refused with 429.
	const attempts, burst = 60, 20
	c := clientFrom("127.0.0.2")
	passed, limited := 0, 0
	start := time.Now()
	for i := 0; i < attempts; i++ {
		switch st, _ := statusOf(t, c, url); st {
		case http.StatusTooManyRequests:
			limited++
		case http.StatusBadRequest:
			passed++
		default:
			t.Fatalf("attempt %d: status %d", i, st)
		}
	}
	// 60r/m lets one more through per second the burst takes.
	most := burst + 2 + int(time.Since(start).Seconds())
	if passed < burst+1 || passed > most || limited != attempts-passed {
		t.Fatalf("%d attempts passed, %d limited; want %d-%d to pass and the rest 429", passed, limited, burst+1, most)
	}
	l := waitAccessLog(t, nginx, "a 429", func(l accessLogLine) bool { return l.Status == http.StatusTooManyRequests && l.URI == "/ws" })
	if l.UpstreamAddr != "" {
		t.Fatalf("a limited attempt reached %s", l.UpstreamAddr)
	}
	// /ws keeps its error lines out of the log (they would quote tokens):
	// the 429 in the access log above is the record of the limiting.
	if strings.Contains(nginx.ErrorLog(), "token=") {
		t.Error("nginx's error log holds a token")
	}

	// Another address has its own allowance.
	if st, _ := statusOf(t, clientFrom("127.0.0.3"), url); st != http.StatusBadRequest {
		t.Fatalf("another address got %d", st)
	}
	// Loopback itself is exempt (health checks, local load tests).
	local := clientFrom("127.0.0.1")
	for i := 0; i < attempts; i++ {
		if st, _ := statusOf(t, local, url); st != http.StatusBadRequest {
			t.Fatalf("127.0.0.1 attempt %d: status %d, loopback must not be limited", i, st)
		}
	}
}

func TestNginxSecurityHeadersAndSizes(t *testing.T) {
	a := startFakeGateway(t, "gw-a")
	nginx := StartNginx(t, []string{a.addr()})
	c := clientFrom("127.0.0.1")

	for _, path := range []string{"/healthz", "/", "/ws?userid=alice&token=tok"} {
		_, h := statusOf(t, c, nginx.URL()+path)
		for k, want := range map[string]string{
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
			"Content-Security-Policy": "frame-ancestors 'none'",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
		if h.Get("Strict-Transport-Security") != "" {
			t.Errorf("%s: HSTS on plain HTTP", path)
		}
	}

	// A token as long as the gateway accepts (8 KiB) fits the request line.
	long := strings.Repeat("t", 8192)
	if st, _ := statusOf(t, c, nginx.URL()+"/ws?userid=alice&token="+long); st != http.StatusBadRequest {
		t.Fatalf("8 KiB token: status %d, want it passed to the gateway", st)
	}
	var seen bool
	for _, r := range a.seen() {
		seen = seen || strings.Contains(r.Query, long)
	}
	if !seen {
		t.Fatal("the gateway did not get the 8 KiB token")
	}
	// Far beyond it the request line is refused by nginx.
	if st, _ := statusOf(t, c, nginx.URL()+"/ws?userid=alice&token="+strings.Repeat("t", 20000)); st != http.StatusRequestURITooLong {
		t.Fatalf("20 KB token: status %d, want 414", st)
	}
	// No body beyond client_max_body_size.
	resp, err := c.Post(nginx.URL()+"/", "application/octet-stream", strings.NewReader(strings.Repeat("x", 100<<10)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("100 KiB body: status %d, want 413", resp.StatusCode)
	}
}

// The gateway compares a browser's Origin (host:port) with Host, so nginx
// must pass on the Host the client sent, port included — also when clients
// reach nginx on a published port other than the one it listens on, as in
// compose's "8080:80".
func TestNginxForwardsHostWithPort(t *testing.T) {
	a := startFakeGateway(t, "gw-a")
	nginx := StartNginx(t, []string{a.addr()})
	pub := nginx.Publish(t)

	s, _ := getJSON(t, "http://"+pub.Addr()+"/", nil)
	if s.Host != pub.Addr() || s.ForwardedHost != pub.Addr() {
		t.Fatalf("gateway saw Host %q, X-Forwarded-Host %q; want the client's %q", s.Host, s.ForwardedHost, pub.Addr())
	}
	// Host without a port (a browser on the default port sends none).
	status, body := rawHTTP(t, pub.Addr(), "GET / HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n")
	if err := json.Unmarshal([]byte(body), &s); status != http.StatusOK || err != nil || s.Host != "chat.example.com" {
		t.Fatalf("Host without a port: status %d, gateway saw %q (%v)", status, s.Host, err)
	}

	// An HTTP/1.0 client may send no Host at all; nginx talks HTTP/1.1 to
	// the gateway, which refuses a request without Host (400), so nginx
	// must still send one.
	status, body = rawHTTP(t, pub.Addr(), "GET / HTTP/1.0\r\n\r\n")
	if status != http.StatusOK {
		t.Fatalf("HTTP/1.0 without Host: status %d: %s", status, body)
	}
	var seen seenRequest
	if err := json.Unmarshal([]byte(body), &seen); err != nil || seen.Host == "" {
		t.Fatalf("HTTP/1.0 without Host: gateway saw %+v (%v)", seen, err)
	}
}

// rawHTTP sends req as is and returns the status and body of the answer.
func rawHTTP(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
