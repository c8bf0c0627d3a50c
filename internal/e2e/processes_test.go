package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/fakeopenai"
	"github.com/chatrelay/chat/internal/testinfra"
)

// system is the seed deployment as separate processes: two websocket-servers
// behind real nginx, ai-consumer and message-relay, on real redis-server, a
// kfake broker and a fake OpenAI server.
type system struct {
	Redis    *testinfra.Redis
	Kafka    *testinfra.Kafka
	OpenAI   *fakeopenai.Server
	Nginx    *testinfra.Nginx
	Gateways []*testinfra.Process
	GwOps    []string // ops base URLs of the gateways
	AI       *testinfra.Process
	Relay    *testinfra.Process
}

// startSystem starts everything; extraEnv is added to every service.
func startSystem(t *testing.T, extraEnv ...string) *system {
	t.Helper()
	s := &system{
		Redis:  testinfra.StartRedis(t),
		Kafka:  testinfra.StartKafka(t, testinfra.WithPartitions(8)),
		OpenAI: fakeopenai.Start(t, fakeopenai.WithAPIKey(testAPIKey)),
	}
	common := []string{
		"KAFKA_BOOTSTRAP_SERVERS=" + s.Kafka.Bootstrap(),
		"KAFKA_TOPIC_PARTITIONS=8",
		"REDIS_URL=" + s.Redis.URL(),
		"LOG_LEVEL=info",
		// The suites send faster than a person; limits have their own tests.
		"RATE_USER_MESSAGES_PER_MIN=0", "LIMIT_IP_CONNECTS_PER_MIN=0",
	}
	common = append(common, extraEnv...)
	var upstreams []string
	for i := 1; i <= 2; i++ {
		httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
		env := append([]string{
			"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + testSecret,
			fmt.Sprintf("INSTANCE_ID=gw-%d", i),
		}, common...)
		s.Gateways = append(s.Gateways, testinfra.StartProcess(t, fmt.Sprintf("websocket-server-%d", i), "websocket-server", env, "http://"+opsAddr+"/readyz"))
		s.GwOps = append(s.GwOps, "http://"+opsAddr)
		upstreams = append(upstreams, httpAddr)
	}
	aiOps := testinfra.FreeAddr(t)
	s.AI = testinfra.StartProcess(t, "ai-consumer", "ai-consumer", append([]string{
		"OPS_ADDR=" + aiOps, "OPENAI_API_KEY=" + testAPIKey, "OPENAI_BASE_URL=" + s.OpenAI.BaseURL(), "OPENAI_MODEL=test-model",
	}, common...), "http://"+aiOps+"/readyz")
	relayOps := testinfra.FreeAddr(t)
	s.Relay = testinfra.StartProcess(t, "message-relay", "message-relay", append([]string{"OPS_ADDR=" + relayOps}, common...), "http://"+relayOps+"/readyz")
	s.Nginx = testinfra.StartNginx(t, upstreams)
	return s
}

type userResult struct {
	acks      map[string]string // message id → client id
	responses []testinfra.Frame
	errors    []testinfra.Frame
	foreign   []testinfra.Frame
}

// Acceptance 2: 200 users through nginx, 5 messages each → 1,000 responses,
// each to its own user, none missing, none duplicated.
func TestSeparateProcessesBehindNginx(t *testing.T) {
	s := startSystem(t)
	const users, perUser = 200, 5
	base := "ws://" + s.Nginx.Addr()

	results := make([]userResult, users)
	var wg sync.WaitGroup
	errc := make(chan error, users)
	for u := 0; u < users; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- runUser(base, fmt.Sprintf("user-%03d", u), perUser, &results[u])
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Error(err)
		}
	}

	total, seen := 0, map[string]bool{}
	for u, r := range results {
		userID := fmt.Sprintf("user-%03d", u)
		if len(r.foreign) > 0 || len(r.errors) > 0 {
			t.Errorf("%s: %d foreign frames, %d error frames (%+v %+v)", userID, len(r.foreign), len(r.errors), r.foreign, r.errors)
		}
		if len(r.acks) != perUser || len(r.responses) != perUser {
			t.Errorf("%s: %d acks, %d responses, want %d each", userID, len(r.acks), len(r.responses), perUser)
		}
		for i, resp := range r.responses {
			clientID, ok := r.acks[resp.ReplyTo]
			want := fmt.Sprintf("echo: %s message %d", userID, i)
			if !ok || clientID != fmt.Sprintf("c%d", i) || resp.Content != want || resp.UserID != userID {
				t.Errorf("%s: response %d does not answer its message in order: %s", userID, i, resp.Raw)
			}
			if seen[resp.ID] {
				t.Errorf("%s: duplicated response %s", userID, resp.ID)
			}
			seen[resp.ID] = true
			total++
		}
	}
	if total != users*perUser {
		t.Fatalf("%d responses, want %d", total, users*perUser)
	}
	// nginx spread the users over both instances.
	for i, ops := range s.GwOps {
		if n := scrapeSum(t, ops+"/metrics", "chat_ws_connects_total", `outcome="accepted"`); n < 20 {
			t.Errorf("gateway %d accepted only %v connections: nginx did not balance", i+1, n)
		}
	}

	// Acceptance 3: a non-Go client reads the records, keyed by userid.
	for _, topic := range []string{"incoming_messages", "responses"} {
		out := s.Kafka.Kcat("-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k\t%s\n")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != users*perUser {
			t.Fatalf("kcat read %d records from %s, want %d", len(lines), topic, users*perUser)
		}
		for _, l := range lines {
			key, value, _ := strings.Cut(l, "\t")
			var e struct {
				UserID string `json:"userid"`
			}
			if err := json.Unmarshal([]byte(value), &e); err != nil || e.UserID != key || key == "" {
				t.Fatalf("%s record keyed %q holds %q (%v)", topic, key, value, err)
			}
		}
	}
}

func runUser(base, userID string, n int, r *userResult) error {
	c, err := testinfra.Dial(base, testSecret, userID)
	if err != nil {
		return err
	}
	defer c.Conn.Close()
	r.acks = map[string]string{}
	for i := 0; i < n; i++ {
		if err := c.Send(fmt.Sprintf("%s message %d", userID, i), fmt.Sprintf("c%d", i)); err != nil {
			return fmt.Errorf("%s: send: %w", userID, err)
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(r.responses)+len(r.errors) < n || len(r.acks) < n {
		f, err := c.Next(time.Until(deadline))
		if err != nil {
			return fmt.Errorf("%s: after %d acks and %d responses: %w", userID, len(r.acks), len(r.responses), err)
		}
		switch {
		case f.UserID != userID:
			r.foreign = append(r.foreign, f)
		case f.Type == "ack":
			r.acks[f.ID] = f.ClientID
		case f.Type == "response":
			r.responses = append(r.responses, f)
		default:
			r.errors = append(r.errors, f)
		}
	}
	// Nothing more may arrive: a duplicate would show up here.
	if f, err := c.Next(200 * time.Millisecond); err == nil {
		r.foreign = append(r.foreign, f)
	}
	return nil
}

// scrapeSum adds up the samples of metric whose labels contain match.
func scrapeSum(t *testing.T, url, metric, match string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, metric+"{") || !strings.Contains(l, match) {
			continue
		}
		var v float64
		if _, err := fmt.Sscanf(l[strings.LastIndex(l, " ")+1:], "%g", &v); err == nil {
			sum += v
		}
	}
	return sum
}
