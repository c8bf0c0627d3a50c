package e2e

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/fakeopenai"
	"github.com/chatrelay/chat/internal/llm"
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
	Redis   *testinfra.Redis
	Kafka   *testinfra.Kafka
	OpenAI  *fakeopenai.Server
	WSBase  string   // ws://host:port of the first gateway
	WSBases []string // every gateway
	Reg     *prometheus.Registry
	Logs    string // path of the JSON log file
}

// startStack runs websocket-server, ai-consumer and message-relay with the
// real clients: redis-server, kfake, and go-openai against the fake server.
func startStack(t *testing.T) *stack { return startStackWith(t, nil, 1) }

// startStackWith is startStack with env overrides and several gateways
// sharing the broker and Redis. The services are built and run by
// process.Build, as the binaries and the dev stack build them.
func startStackWith(t *testing.T, overrides map[string]string, gateways int) *stack {
	t.Helper()
	s := &stack{
		Redis:  testinfra.StartRedis(t),
		Kafka:  testinfra.StartKafka(t, testinfra.WithPartitions(4)),
		OpenAI: fakeopenai.Start(t, fakeopenai.WithAPIKey(testAPIKey)),
		Reg:    prometheus.NewRegistry(),
		Logs:   filepath.Join(t.TempDir(), "services.log"),
	}
	logFile, err := os.Create(s.Logs)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": s.Kafka.Bootstrap(),
		"KAFKA_TOPIC_PARTITIONS":  "4",
		"REDIS_URL":               s.Redis.URL(),
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
	maps.Copy(env, overrides)
	ctx, cancel := context.WithCancel(context.Background())
	svcs, err := process.Build(ctx, process.Options{
		Name: "e2e", Env: env, Services: process.All(), Gateways: gateways,
		// A short timeout, so a test of a hanging model does not wait a minute.
		Model: func(cfg aiconsumer.Config) llm.Model {
			return llm.NewOpenAI(llm.OpenAIConfig{APIKey: cfg.APIKey, BaseURL: cfg.BaseURL, Model: cfg.Model, Timeout: 5 * time.Second})
		},
		// Not NewTelemetry: it would replace the global tracer and logger
		// that every stack of this test binary shares.
		Telemetry: &process.Telemetry{
			Service: "e2e", Log: telemetry.NewLogger(logFile, "e2e", slog.LevelDebug),
			Out: logFile, Level: slog.LevelDebug, Registry: s.Reg,
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for _, gw := range svcs.Gateways {
		s.WSBases = append(s.WSBases, "ws://"+gw.Addr())
	}
	s.WSBase = s.WSBases[0]
	done := make(chan error, 1)
	go func() { done <- svcs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("services stopped with error: %v", err)
		}
		_ = logFile.Close()
		if t.Failed() {
			logProblems(t, s.Logs)
		}
	})
	return s
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
