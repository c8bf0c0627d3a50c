// Package devstack runs the whole chat system in one process for local
// development: the three services, wired exactly as in production, on an
// embedded Kafka broker (franz-go's kfake) and an in-process Redis
// (miniredis) unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL point at real ones.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/gateway"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/process"
	"github.com/chatrelay/chat/internal/relay"
	"github.com/chatrelay/chat/internal/telemetry"
	"github.com/chatrelay/chat/internal/webui"
)

// Config holds the dev-only settings.
type Config struct {
	// KafkaAddr is where the embedded broker listens when no
	// KAFKA_BOOTSTRAP_SERVERS is given.
	KafkaAddr string `env:"DEV_KAFKA_ADDR" envDefault:"127.0.0.1:0"`
	// RedisAddr is where the embedded Redis listens when no REDIS_URL is given.
	RedisAddr string `env:"DEV_REDIS_ADDR" envDefault:"127.0.0.1:0"`
	// DemoUser is the user the printed demo URL is for.
	DemoUser string `env:"DEV_DEMO_USER" envDefault:"demo"`
}

// Run starts everything and blocks until ctx ends. out receives the
// human-readable banner with a ready-to-use URL.
func Run(ctx context.Context, out io.Writer) error {
	var dev Config
	if err := config.Load(&dev); err != nil {
		return err
	}
	var opsCfg config.Ops
	if err := config.Load(&opsCfg); err != nil {
		return err
	}
	tel, err := process.NewTelemetry(ctx, "devstack", opsCfg.LogLevel)
	if err != nil {
		return err
	}
	level, _ := telemetry.ParseLevel(opsCfg.LogLevel)
	logger := func(service string) *slog.Logger { return telemetry.NewLogger(os.Stdout, service, level) }

	// Embedded servers only where no real one is configured; the services
	// then read the same variables as in production.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	if os.Getenv("KAFKA_BOOTSTRAP_SERVERS") == "" {
		addr, stop, err := startKafka(dev.KafkaAddr)
		if err != nil {
			return err
		}
		closers = append(closers, stop)
		setenv("KAFKA_BOOTSTRAP_SERVERS", addr)
		setenvDefault("KAFKA_TOPIC_PARTITIONS", "4")
		tel.Log.Info("embedded kafka broker (kfake) started", "addr", addr)
	}
	if os.Getenv("REDIS_URL") == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr(dev.RedisAddr); err != nil {
			return fmt.Errorf("DEV_REDIS_ADDR: embedded redis: %w", err)
		}
		closers = append(closers, m.Close)
		setenv("REDIS_URL", "redis://"+m.Addr()+"/0")
		tel.Log.Info("embedded redis (miniredis) started", "addr", m.Addr())
	}
	generatedSecret := false
	if os.Getenv("AUTH_SECRET") == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		setenv("AUTH_SECRET", hex.EncodeToString(b))
		generatedSecret = true
	}
	if os.Getenv("OPENAI_API_KEY") == "" {
		setenvDefault("LLM_OFFLINE", "true")
	}
	setenvDefault("INSTANCE_ID", "dev")

	var gwCfg gateway.Config
	var aiCfg aiconsumer.Config
	var relayCfg relay.Config
	for _, c := range []any{&gwCfg, &aiCfg, &relayCfg} {
		if err := config.Load(c); err != nil {
			return err
		}
	}
	tel.Log.Info("configuration", config.LogValue(&gwCfg)...)

	gw, err := gateway.New(ctx, gwCfg, logger("websocket-server"), telemetry.ServiceRegisterer(tel.Registry, "websocket-server"))
	if err != nil {
		return err
	}
	// Dev only: the chat page's "Dev sign-in" mints tokens here.
	gw.Handle(http.MethodGet, "/dev/token", webui.DevTokenHandler(func(u string) (string, error) {
		return auth.MintFromConfig(gwCfg.Auth, u, 24*time.Hour)
	}))
	ai, err := aiconsumer.New(ctx, aiCfg, aiconsumer.NewModel(aiCfg), logger("ai-consumer"), telemetry.ServiceRegisterer(tel.Registry, "ai-consumer"))
	if err != nil {
		return err
	}
	rl, err := relay.New(ctx, relayCfg, logger("message-relay"), telemetry.ServiceRegisterer(tel.Registry, "message-relay"))
	if err != nil {
		return err
	}
	opsSrv := &ops.Server{Addr: opsCfg.Addr, Gatherer: tel.Registry, Log: tel.Log}
	for _, s := range []process.Service{gw, ai, rl} {
		for name, c := range s.Checks() {
			opsSrv.AddCheck(name, c)
		}
	}
	printBanner(out, gw.Addr(), dev.DemoUser, gwCfg.Auth, generatedSecret, aiCfg.Offline)
	return process.Run(ctx, tel, opsSrv, opsCfg.ShutdownTimeout, gw, ai, rl)
}

func startKafka(addr string) (string, func(), error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("DEV_KAFKA_ADDR: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", nil, fmt.Errorf("DEV_KAFKA_ADDR: bad port: %w", err)
	}
	if port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", nil, fmt.Errorf("DEV_KAFKA_ADDR: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
	}))
	if err != nil {
		return "", nil, fmt.Errorf("embedded kafka: %w", err)
	}
	return c.ListenAddrs()[0], c.Close, nil
}

func printBanner(out io.Writer, addr, user string, ac auth.Config, generated, offline bool) {
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	token, err := auth.MintFromConfig(ac, user, 24*time.Hour)
	if err != nil {
		return
	}
	fmt.Fprintf(out, "\n  Chat dev stack is up.\n")
	fmt.Fprintf(out, "  Chat page: http://%s/  (use \"Dev sign-in\")\n", net.JoinHostPort(host, port))
	fmt.Fprintf(out, "  WebSocket URL (user %q, token valid 24h):\n    ws://%s/ws?userid=%s&token=%s\n", user, net.JoinHostPort(host, port), user, token)
	if generated {
		fmt.Fprintf(out, "  AUTH_SECRET was not set; this run uses a random one (set AUTH_SECRET to mint your own tokens).\n")
	}
	if offline {
		fmt.Fprintf(out, "  Model: the built-in OFFLINE model (set OPENAI_API_KEY to use a real one).\n")
	}
	fmt.Fprintln(out)
}

func setenv(k, v string) { _ = os.Setenv(k, v) }

func setenvDefault(k, v string) {
	if os.Getenv(k) == "" {
		_ = os.Setenv(k, v)
	}
}
