package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/fakeopenai"
	"github.com/chatrelay/chat/internal/gateway"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/relay"
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

func loadConfig(t *testing.T, dst any, env map[string]string) {
	t.Helper()
	if err := config.LoadFrom(dst, env); err != nil {
		t.Fatal(err)
	}
}

// startStack runs websocket-server, ai-consumer and message-relay with the
// real clients: redis-server, kfake, and go-openai against the fake server.
func startStack(t *testing.T) *stack { return startStackWith(t, nil, 1) }

// startStackWith is startStack with env overrides and several gateways
// sharing the broker and Redis.
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
	for k, v := range overrides {
		env[k] = v
	}
	var aiCfg aiconsumer.Config
	var rlCfg relay.Config
	loadConfig(t, &aiCfg, env)
	loadConfig(t, &rlCfg, env)

	ctx, cancel := context.WithCancel(context.Background())
	logger := func(name string) *slog.Logger { return telemetry.NewLogger(logFile, name, slog.LevelDebug) }
	var parts []interface{ Run(context.Context) error }
	for i := 0; i < gateways; i++ {
		var gwCfg gateway.Config
		env["INSTANCE_ID"] = fmt.Sprintf("gw-test-%d", i+1)
		loadConfig(t, &gwCfg, env)
		// Only the first gateway's metrics are in s.Reg; the others would
		// collide with it in one registry.
		var reg prometheus.Registerer = s.Reg
		if i > 0 {
			reg = prometheus.NewRegistry()
		}
		gw, err := gateway.New(ctx, gwCfg, logger("websocket-server"), telemetry.ServiceRegisterer(reg, "websocket-server"))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, gw)
		s.WSBases = append(s.WSBases, "ws://"+gw.Addr())
	}
	s.WSBase = s.WSBases[0]
	model := llm.NewOpenAI(llm.OpenAIConfig{APIKey: aiCfg.APIKey, BaseURL: aiCfg.BaseURL, Model: aiCfg.Model, Timeout: 5 * time.Second})
	ai, err := aiconsumer.New(ctx, aiCfg, model, logger("ai-consumer"), telemetry.ServiceRegisterer(s.Reg, "ai-consumer"))
	if err != nil {
		t.Fatal(err)
	}
	rl, err := relay.New(ctx, rlCfg, logger("message-relay"), telemetry.ServiceRegisterer(s.Reg, "message-relay"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range append(parts, ai, rl) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Run(ctx); err != nil {
				t.Errorf("service stopped with error: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(s.Logs)
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
	})
	return s
}
