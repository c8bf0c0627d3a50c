// Package devstack runs the whole chat system in one process for local
// development: the three services, built by process.Build exactly as the
// binaries build them, on an embedded Kafka broker (franz-go's kfake) and an
// in-process Redis (miniredis) unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL
// point at real ones. Its settings reach the services through the
// environment map it passes, never through os.Setenv.
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
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/process"
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
	env := process.Environ()
	var dev Config
	if err := config.LoadFrom(&dev, env); err != nil {
		return err
	}
	var opsCfg config.Ops
	if err := config.LoadFrom(&opsCfg, env); err != nil {
		return err
	}
	tel, err := process.NewTelemetry(ctx, "devstack", opsCfg.LogLevel)
	if err != nil {
		return err
	}
	stop, generatedSecret, err := prepare(env, dev, tel.Log)
	defer stop()
	if err != nil {
		return err
	}
	s, err := process.Build(ctx, process.Options{Name: "devstack", Env: env, Services: process.All(), Telemetry: tel})
	if err != nil {
		return err
	}
	gw, gwCfg := s.Gateways[0], s.GatewayConfigs[0]
	// Dev only: the chat page's "Dev sign-in" mints tokens here.
	gw.Handle(http.MethodGet, "/dev/token", webui.DevTokenHandler(func(u string) (string, error) {
		return auth.MintFromConfig(gwCfg.Auth, u, 24*time.Hour)
	}))
	printBanner(out, gw.Addr(), dev.DemoUser, gwCfg.Auth, generatedSecret, s.AIConfig.Offline)
	return s.Run(ctx)
}

// prepare adds to env what make run needs beyond the services' defaults:
// an embedded broker and Redis where no real one is configured (the
// services then read the same variables as in production), a random
// AUTH_SECRET, the offline model without an OPENAI_API_KEY, and a fixed
// instance name. stop closes the embedded servers; it is never nil.
func prepare(env map[string]string, dev Config, log *slog.Logger) (stop func(), generatedSecret bool, err error) {
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if env["KAFKA_BOOTSTRAP_SERVERS"] == "" {
		addr, closeKafka, err := startKafka(dev.KafkaAddr)
		if err != nil {
			return stop, false, err
		}
		closers = append(closers, closeKafka)
		env["KAFKA_BOOTSTRAP_SERVERS"] = addr
		setDefault(env, "KAFKA_TOPIC_PARTITIONS", "4")
		log.Info("embedded kafka broker (kfake) started", "addr", addr)
	}
	if env["REDIS_URL"] == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr(dev.RedisAddr); err != nil {
			return stop, false, fmt.Errorf("DEV_REDIS_ADDR: embedded redis: %w", err)
		}
		closers = append(closers, m.Close)
		env["REDIS_URL"] = "redis://" + m.Addr() + "/0"
		log.Info("embedded redis (miniredis) started", "addr", m.Addr())
	}
	if env["AUTH_SECRET"] == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		env["AUTH_SECRET"] = hex.EncodeToString(b)
		generatedSecret = true
	}
	if env["OPENAI_API_KEY"] == "" {
		setDefault(env, "LLM_OFFLINE", "true")
	}
	setDefault(env, "INSTANCE_ID", "dev")
	return stop, generatedSecret, nil
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

// setDefault sets key unless it has a value; an empty value counts as
// unset, as it does for the services' envDefault tags.
func setDefault(env map[string]string, key, value string) {
	if env[key] == "" {
		env[key] = value
	}
}
