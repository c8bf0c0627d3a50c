package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// Config is the websocket-server's configuration.
type Config struct {
	Kafka   config.Kafka
	Redis   config.Redis
	History history.Config

	HTTPAddr string `env:"HTTP_ADDR" envDefault:":8080"`
	// Auth is how client tokens are checked (AUTH_*).
	Auth auth.Config
	// Limits are the abuse limits (RATE_*, LIMIT_*).
	Limits ratelimit.Config

	// ReadLimit is the largest frame accepted; larger closes with 1009.
	ReadLimit       int64         `env:"WS_READ_LIMIT" envDefault:"16384"`
	MaxContentBytes int           `env:"WS_MAX_CONTENT_BYTES" envDefault:"8000"`
	PingInterval    time.Duration `env:"WS_PING_INTERVAL" envDefault:"25s"`
	PongTimeout     time.Duration `env:"WS_PONG_TIMEOUT" envDefault:"60s"`
	WriteTimeout    time.Duration `env:"WS_WRITE_TIMEOUT" envDefault:"10s"`
	SendQueue       int           `env:"WS_SEND_QUEUE" envDefault:"256"`
	// Netpoll reads sockets only when epoll says they are readable, so an
	// idle socket holds no goroutine; false: a reader goroutine per socket.
	Netpoll bool `env:"WS_NETPOLL" envDefault:"true"`
	// ResumesPerMin bounds resume frames per socket (each reads the
	// history, up to all of it), with bursts of ResumesBurst; 0 disables.
	ResumesPerMin int `env:"WS_RESUMES_PER_MIN" envDefault:"20"`
	ResumesBurst  int `env:"WS_RESUMES_BURST" envDefault:"5"`
	// TrustedProxies are the peers whose X-Real-IP header names the client
	// (nginx): per-address limits and logs use that address. From any
	// other peer the header is ignored. Narrow it to nginx's network in
	// production; the default is loopback and the private ranges.
	TrustedProxies string `env:"TRUSTED_PROXY_NETWORKS" envDefault:"127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"`
	// AllowedOrigins lists browser origins allowed besides the server's own.
	AllowedOrigins []string `env:"WS_ALLOWED_ORIGINS" envSeparator:","`

	// ProduceTimeout bounds the wait for the broker's ack of a message.
	ProduceTimeout time.Duration `env:"GATEWAY_PRODUCE_TIMEOUT" envDefault:"15s"`
	Drain          time.Duration `env:"GATEWAY_DRAIN_TIMEOUT" envDefault:"10s"`
}

// Validate checks the gateway's settings.
func (c *Config) Validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	if err := c.History.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("HTTP_ADDR: %q is not host:port: %w", c.HTTPAddr, err)
	}
	switch {
	case c.ReadLimit < 512:
		return errors.New("WS_READ_LIMIT: must be at least 512 bytes")
	case c.MaxContentBytes < 1 || int64(c.MaxContentBytes) > c.ReadLimit:
		return errors.New("WS_MAX_CONTENT_BYTES: must be between 1 and WS_READ_LIMIT")
	case c.PingInterval <= 0:
		return errors.New("WS_PING_INTERVAL: must be positive")
	case c.PongTimeout <= c.PingInterval:
		return errors.New("WS_PONG_TIMEOUT: must be longer than WS_PING_INTERVAL")
	case c.WriteTimeout <= 0:
		return errors.New("WS_WRITE_TIMEOUT: must be positive")
	case c.ProduceTimeout <= 0:
		return errors.New("GATEWAY_PRODUCE_TIMEOUT: must be positive")
	case c.SendQueue < 1:
		return errors.New("WS_SEND_QUEUE: must be at least 1")
	case c.ResumesPerMin < 0:
		return errors.New("WS_RESUMES_PER_MIN: must not be negative (0 disables)")
	case c.ResumesPerMin > 0 && c.ResumesBurst < 1:
		return errors.New("WS_RESUMES_BURST: must be at least 1")
	}
	if _, err := ratelimit.ParseNetworksOf("TRUSTED_PROXY_NETWORKS", c.TrustedProxies); err != nil {
		return err
	}
	return nil
}

// Instance names this instance in logs, spans and the producer's client id:
// INSTANCE_ID, or the host name (the setting every service shares).
func (c *Config) Instance() string { return c.Kafka.Instance() }
