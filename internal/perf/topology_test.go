package perf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// testSecret is the gateways' AUTH_SECRET; loadgen mints its tokens with it.
const testSecret = "perf-harness-secret-0123456789"

// topology is the system as separate processes on loopback.
type topology struct {
	binDir   string
	Redis    *testinfra.Redis
	Kafka    *testinfra.Kafka
	Nginx    *testinfra.Nginx // nil for runs straight to the gateways
	Gateways []*testinfra.Process
	GwHTTP   []string // host:port of each gateway's /ws listener
	GwOps    []string // http://host:port of each gateway's ops listener
	AI       *testinfra.Process
	AIOps    string
	Relay    *testinfra.Process
	RelayOps string
	Traces   *traceSink // PERF_TRACES: where the services export their spans
}

// serviceEnv is what every service runs with under load: the shipped
// defaults (the log level included: what a message costs is measured with
// the logs users get; and the images' GODEBUG and the deployments'
// GOMAXPROCS, which testinfra.Process gives every service —
// PERF_ENV="GODEBUG=" or "GOMAXPROCS=" measures without either) but no
// per-user or per-address quotas and no instance socket cap (one load
// generator is 500 users on one address), and the offline model (no model
// here).
func serviceEnv(kafka *testinfra.Kafka, redis *testinfra.Redis, partitions int) []string {
	return []string{
		"KAFKA_BOOTSTRAP_SERVERS=" + kafka.Bootstrap(),
		"KAFKA_TOPIC_PARTITIONS=" + strconv.Itoa(partitions),
		"REDIS_URL=" + redis.URL(),
		"RATE_USER_MESSAGES_PER_MIN=0",
		"LIMIT_IP_CONNECTS_PER_MIN=0",
		"LIMIT_USER_SOCKETS=0",
		"LIMIT_INSTANCE_SOCKETS=0",
		"LIMIT_USER_TOKENS_PER_DAY=0",
		"LLM_OFFLINE=true",
	}
}

// startTopology starts redis-server, the broker, the gateways, the two
// consumers and (unless the run goes straight to the gateways) nginx, then
// checks one message end to end so the consumer groups are settled before
// the load starts.
func startTopology(t *testing.T, s scenario, binDir string) *topology {
	t.Helper()
	tp := &topology{
		binDir: binDir,
		Redis:  testinfra.StartRedis(t),
		Kafka:  testinfra.StartKafka(t, testinfra.WithPartitions(s.Partitions)),
	}
	common := serviceEnv(tp.Kafka, tp.Redis, s.Partitions)
	if s.Traces {
		tp.Traces = startTraceSink(t)
		common = append(common, tp.Traces.env()...)
	}
	common = append(common, s.Env...)
	for i := 1; i <= s.Gateways; i++ {
		httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
		env := append([]string{
			"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + testSecret,
			fmt.Sprintf("INSTANCE_ID=gw-%d", i),
		}, common...)
		name := fmt.Sprintf("websocket-server-%d", i)
		tp.Gateways = append(tp.Gateways, testinfra.StartProcessFrom(t, binDir, name, "websocket-server", env, "http://"+opsAddr+"/readyz"))
		tp.GwHTTP = append(tp.GwHTTP, httpAddr)
		tp.GwOps = append(tp.GwOps, "http://"+opsAddr)
	}
	tp.AIOps = "http://" + testinfra.FreeAddr(t)
	tp.AI = testinfra.StartProcessFrom(t, binDir, "ai-consumer", "ai-consumer",
		append([]string{"OPS_ADDR=" + tp.AIOps[len("http://"):]}, common...), tp.AIOps+"/readyz")
	tp.RelayOps = "http://" + testinfra.FreeAddr(t)
	tp.Relay = testinfra.StartProcessFrom(t, binDir, "message-relay", "message-relay",
		append([]string{"OPS_ADDR=" + tp.RelayOps[len("http://"):]}, common...), tp.RelayOps+"/readyz")
	if !s.Direct {
		tp.Nginx = testinfra.StartNginx(t, tp.GwHTTP)
	}
	tp.warmUp(t)
	return tp
}

// wsURLs are the addresses loadgen connects to.
func (tp *topology) wsURLs() []string {
	if tp.Nginx != nil {
		return []string{"ws://" + tp.Nginx.Addr()}
	}
	var out []string
	for _, a := range tp.GwHTTP {
		out = append(out, "ws://"+a)
	}
	return out
}

// warmUp sends one message through every entry point and waits for its
// answer: the topics exist, both consumer groups own their partitions and
// every gateway's Redis subscription works.
func (tp *topology) warmUp(t *testing.T) {
	t.Helper()
	for i, base := range tp.wsURLs() {
		user := fmt.Sprintf("perf-warmup-%d", i)
		c, err := testinfra.Dial(base, testSecret, user)
		if err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		if err := c.Send("warm-up", "w1"); err != nil {
			t.Fatalf("warm-up: send: %v", err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			f, err := c.Next(time.Until(deadline))
			if err != nil {
				_ = c.Conn.Close()
				t.Fatalf("warm-up through %s: no answer: %v", base, err)
			}
			if f.Type == "response" {
				break
			}
			if f.Type == "error" {
				_ = c.Conn.Close()
				t.Fatalf("warm-up through %s: error frame %s", base, f.Raw)
			}
		}
		_ = c.Conn.Close()
	}
	// The warm-up sockets must be gone before the run counts open sockets.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		n, err := openSockets(ctx, tp.GwOps)
		if err == nil && n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("warm-up: the gateways still count %v open sockets (%v)", n, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// roots are the processes whose CPU time is sampled. A root with children
// counts its descendants too (nginx's workers, loadgen's workers).
func (tp *topology) roots() []procRoot {
	var out []procRoot
	for i, g := range tp.Gateways {
		out = append(out, procRoot{Name: fmt.Sprintf("gw-%d", i+1), Pid: g.Pid()})
	}
	out = append(out,
		procRoot{Name: "ai-consumer", Pid: tp.AI.Pid()},
		procRoot{Name: "message-relay", Pid: tp.Relay.Pid()},
		procRoot{Name: "redis", Pid: tp.Redis.Pid()},
	)
	if tp.Nginx != nil {
		out = append(out, procRoot{Name: "nginx", Pid: tp.Nginx.Pid(), Children: true})
	}
	// The broker runs inside the test process (the harness's own work is
	// small next to it).
	out = append(out, procRoot{Name: "broker", Pid: os.Getpid()})
	return out
}

// services are the Go services with an ops listener: name, base URL,
// whether a heap profile is taken.
func (tp *topology) services() []service {
	var out []service
	for i, ops := range tp.GwOps {
		out = append(out, service{Name: fmt.Sprintf("gw-%d", i+1), Ops: ops, Heap: true})
	}
	return append(out, service{Name: "ai-consumer", Ops: tp.AIOps, Heap: true}, service{Name: "message-relay", Ops: tp.RelayOps, Heap: true})
}

type service struct {
	Name string
	Ops  string
	Heap bool
}

// saveLogs copies the service logs into dir.
func (tp *topology) saveLogs(dir string) {
	procs := append([]*testinfra.Process{}, tp.Gateways...)
	procs = append(procs, tp.AI, tp.Relay)
	for _, p := range procs {
		if p != nil {
			_ = os.WriteFile(filepath.Join(dir, p.Name+".log"), []byte(p.Logs()), 0o644)
		}
	}
	if tp.Nginx != nil {
		_ = os.WriteFile(filepath.Join(dir, "nginx-error.log"), []byte(tp.Nginx.ErrorLog()), 0o644)
	}
}
