package deploycheck

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/testinfra"
)

// shipped is the compose deployment in miniature: the websocket-server-*
// services of docker-compose.yml, each with exactly the environment compose
// gives it (so the shipped default limits) but local addresses, on a real
// redis-server and a kfake broker, behind the real nginx/nginx.conf, which
// is reached on a published port other than the one it listens on, as
// compose's "8080:80" does. What the deployment files get wrong together —
// a header nginx rewrites, a limit one side exempts and the other does
// not — shows here and in no unit test.
type shipped struct {
	pub    *testinfra.Proxy
	secret string
}

func startShipped(t *testing.T) *shipped {
	t.Helper()
	root := repoRoot(t)
	p, err := loadProject(t, root, []string{filepath.Join(root, baseComposeFile)}, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	redis := testinfra.StartRedis(t)
	kafka := testinfra.StartKafka(t)
	var upstreams []string
	for _, s := range gatewayServices(p) {
		httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
		env := composeEnv(s, map[string]string{
			"HTTP_ADDR": httpAddr, "OPS_ADDR": opsAddr,
			"KAFKA_BOOTSTRAP_SERVERS": kafka.Bootstrap(), "REDIS_URL": redis.URL(),
		})
		testinfra.StartProcess(t, s.Name, serviceBinary(t, s), env, "http://"+opsAddr+"/readyz")
		upstreams = append(upstreams, httpAddr)
	}
	nginx := testinfra.StartNginx(t, upstreams)
	return &shipped{pub: nginx.Publish(t), secret: testEnv["AUTH_SECRET"]}
}

// composeEnv is s's environment from the compose file with the addresses
// replaced by local ones, as KEY=value lines.
func composeEnv(s types.ServiceConfig, local map[string]string) []string {
	var env []string
	for k, v := range s.Environment {
		val := ""
		if v != nil {
			val = *v
		}
		if l, ok := local[k]; ok {
			val = l
		}
		env = append(env, k+"="+val)
	}
	for k, v := range local {
		if _, ok := s.Environment[k]; !ok {
			env = append(env, k+"="+v)
		}
	}
	sort.Strings(env)
	return env
}

// serviceBinary is the binary a service's image runs (its SERVICE build arg).
func serviceBinary(t *testing.T, s types.ServiceConfig) string {
	t.Helper()
	if s.Build != nil {
		if v := s.Build.Args["SERVICE"]; v != nil && *v != "" {
			return *v
		}
	}
	t.Fatalf("%s: no SERVICE build arg names its binary", s.Name)
	return ""
}

// browserHeaders are the headers Chromium sends with the WebSocket
// handshake of the page at pageOrigin; the dialer adds Host (from the URL),
// Upgrade, Connection, Sec-WebSocket-Key/-Version and, with compression on,
// Sec-WebSocket-Extensions, as the browser does.
func browserHeaders(pageOrigin string) http.Header {
	h := http.Header{}
	h.Set("Origin", pageOrigin)
	h.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")
	h.Set("Pragma", "no-cache")
	h.Set("Cache-Control", "no-cache")
	h.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	h.Set("Accept-Language", "en-US,en;q=0.9")
	return h
}

// handshake dials userID's socket on the published port and returns the
// HTTP status (101 on success, the socket closed again).
func (s *shipped) handshake(t *testing.T, userID string, h http.Header) int {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, EnableCompression: true}
	c, resp, err := d.Dial(testinfra.ChatURL("ws://"+s.pub.Addr(), s.secret, userID), h)
	if err == nil {
		_ = c.Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("handshake as %s: %v", userID, err)
	}
	return resp.StatusCode
}

func TestShippedDeployment(t *testing.T) {
	s := startShipped(t)

	// Defect: nginx forwarded `Host $host`, which drops the port, so the
	// gateway's same-origin check refused the chat page it serves itself
	// (http://host:8080/ opening ws://host:8080/ws) with 403.
	t.Run("the page's own origin connects, a foreign one is refused", func(t *testing.T) {
		page := "http://" + s.pub.Addr()
		if st := s.handshake(t, "page-user", browserHeaders(page)); st != http.StatusSwitchingProtocols {
			t.Fatalf("handshake from the page at %s: HTTP %d, want 101", page, st)
		}
		if st := s.handshake(t, "page-user", browserHeaders("http://evil.example")); st != http.StatusForbidden {
			t.Fatalf("handshake from a foreign page: HTTP %d, want 403", st)
		}
	})

	// Defect: nginx exempts loopback from its per-address limits, the
	// gateway's LIMIT_IP_CONNECTS_PER_MIN (120) did not, so the 121st user
	// from one exempt host got 429 from the gateway.
	t.Run("200 users from one exempt host connect", func(t *testing.T) {
		const users = 200
		var conns []*websocket.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for i := 0; i < users; i++ {
			c, err := testinfra.Dial("ws://"+s.pub.Addr(), s.secret, fmt.Sprintf("host-user-%03d", i))
			if err != nil {
				t.Fatalf("user %d of %d: %v", i+1, users, err)
			}
			conns = append(conns, c.Conn)
		}
	})
}
