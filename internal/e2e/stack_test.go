package e2e

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/fakeopenai"
	"github.com/chatrelay/chat/internal/process"
	"github.com/chatrelay/chat/internal/telemetry"
	"github.com/chatrelay/chat/internal/testinfra"
)

const (
	testSecret = "e2e-secret-0123456789abcdef"
	testAPIKey = "sk-test-e2e-key"
)

// stack is the three services in-process against real servers.
type stack struct {
	Redis    *testinfra.Redis        // nil on a cluster
	Cluster  *testinfra.RedisCluster // nil on a single node
	RedisURL string                  // REDIS_URL of the services
	Kafka    *testinfra.Kafka
	OpenAI   *fakeopenai.Server
	WSBase   string   // ws://host:port of the first gateway
	WSBases  []string // every gateway
	Reg      *prometheus.Registry
	Logs     string            // path of the JSON log file
	Env      map[string]string // the services' environment
}

// startStack runs websocket-server, ai-consumer and message-relay with the
// real clients: redis-server, kfake, and go-openai against the fake server.
func startStack(t *testing.T) *stack { return startStackWith(t, nil, 1) }

// startStackWith is startStack with env overrides and several gateways
// sharing the broker and Redis. The services are built and run by
// process.Build, as the binaries and the dev stack build them.
func startStackWith(t *testing.T, overrides map[string]string, gateways int) *stack {
	t.Helper()
	if onCluster() {
		return startClusterStack(t, overrides, gateways)
	}
	r := testinfra.StartRedis(t)
	return startStackOn(t, &stack{Redis: r, RedisURL: r.URL()}, overrides, gateways)
}

// onCluster: E2E_REDIS=cluster (make test-cluster) runs every test that
// starts its stack with startStack or startStackWith on a real Redis
// Cluster instead of one redis-server. make test runs a representative
// subset on a cluster (TestOnRedisCluster) and the rest on one node, to
// stay within its time budget.
func onCluster() bool { return os.Getenv("E2E_REDIS") == "cluster" }

// startClusterStack is startStackWith on a real Redis Cluster (3 masters +
// 3 replicas) through REDIS_URL=redis+cluster://…: user channels are
// sharded there.
func startClusterStack(t *testing.T, overrides map[string]string, gateways int) *stack {
	t.Helper()
	c := testinfra.StartRedisCluster(t)
	return startStackOn(t, &stack{Cluster: c, RedisURL: c.URL()}, overrides, gateways)
}

// startStackOn runs the services on s's Redis with a broker and a model of
// their own.
func startStackOn(t *testing.T, s *stack, overrides map[string]string, gateways int) *stack {
	t.Helper()
	*s = stack{
		Redis: s.Redis, Cluster: s.Cluster, RedisURL: s.RedisURL,
		Kafka:  testinfra.StartKafka(t, testinfra.WithPartitions(4)),
		OpenAI: fakeopenai.Start(t, fakeopenai.WithAPIKey(testAPIKey)),
		Reg:    prometheus.NewRegistry(),
		Logs:   filepath.Join(t.TempDir(), "services.log"),
	}
	opts := stackOptions(s, overrides, gateways)
	for _, gw := range runServices(t, s.Logs, s.Reg, opts).Gateways {
		s.WSBases = append(s.WSBases, "ws://"+gw.Addr())
	}
	s.WSBase = s.WSBases[0]
	return s
}

// stackOptions is how the tests build the services: on the servers of s,
// with settings for tests and the overrides.
func stackOptions(s *stack, overrides map[string]string, gateways int) process.Options {
	env := map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": s.Kafka.Bootstrap(),
		"KAFKA_TOPIC_PARTITIONS":  "4",
		"REDIS_URL":               s.RedisURL,
		"AUTH_SECRET":             testSecret,
		"HTTP_ADDR":               "127.0.0.1:0",
		"OPS_ADDR":                "127.0.0.1:0",
		"INSTANCE_ID":             "gw-test",
		"OPENAI_API_KEY":          testAPIKey,
		"OPENAI_BASE_URL":         s.OpenAI.BaseURL(),
		"OPENAI_MODEL":            "test-model",
		"WS_READ_LIMIT":           "4096",
		"WS_MAX_CONTENT_BYTES":    "2000",
		// The suites send faster than a person; limits have their own tests.
		"RATE_USER_MESSAGES_PER_MIN": "0",
		"LIMIT_IP_CONNECTS_PER_MIN":  "0",
	}
	// OPENAI_TIMEOUT (a documented knob) bounds a model call at 5 s rather
	// than a minute: a stalled fake fails its test quickly. The model is
	// built as in production (aiconsumer.NewModel: go-openai, fallbacks).
	env["OPENAI_TIMEOUT"] = "5s"
	maps.Copy(env, overrides)
	s.Env = env
	return process.Options{Name: "e2e", Env: env, Services: process.All(), Gateways: gateways}
}

// runServices builds the services of opts with test telemetry (logs at
// debug level into the file logs, metrics into reg), runs them until the
// test ends, and then shows their warnings and errors if it failed.
func runServices(t *testing.T, logs string, reg *prometheus.Registry, opts process.Options) *process.Services {
	t.Helper()
	logFile, err := os.Create(logs)
	if err != nil {
		t.Fatal(err)
	}
	// Not NewTelemetry: it would replace the global tracer and logger that
	// every stack of this test binary shares.
	opts.Telemetry = &process.Telemetry{
		Service: opts.Name, Log: telemetry.NewLogger(logFile, opts.Name, slog.LevelDebug),
		Out: logFile, Level: slog.LevelDebug, Registry: reg,
	}
	ctx, cancel := context.WithCancel(context.Background())
	svcs, err := process.Build(ctx, opts)
	if err != nil {
		cancel()
		_ = logFile.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svcs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("services stopped with error: %v", err)
		}
		_ = logFile.Close()
		if t.Failed() {
			logProblems(t, logs)
		}
	})
	return svcs
}

// logProblems shows the services' last warnings and errors of a failed test.
func logProblems(t *testing.T, logs string) {
	b, _ := os.ReadFile(logs)
	var problems []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
			problems = append(problems, l)
		}
	}
	if len(problems) > 40 {
		problems = problems[len(problems)-40:]
	}
	t.Logf("---- service warnings and errors (last 40) ----\n%s", strings.Join(problems, "\n"))
}
