// Package gateway is the websocket-server service: it authenticates chat
// clients, accepts their messages onto Kafka (acknowledging only after the
// broker did), and delivers the answers published on their Redis channels to
// every socket the user holds on this instance.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/delivery"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/netpoll"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/redisbus"
	"github.com/chatrelay/chat/internal/webui"
)

// Gateway is the running websocket-server.
type Gateway struct {
	cfg      Config
	instance string // INSTANCE_ID or the host name
	log      *slog.Logger
	verifier *auth.Verifier
	rdb      redis.UniversalClient
	producer *kgo.Client
	hub      *redisbus.Hub
	history  *history.Store
	replays  *replayReader
	marks    *deliveredMarks
	lim      limits
	m        *metrics
	tracer   trace.Tracer
	upgrader websocket.Upgrader
	echo     *echo.Echo
	ln       net.Listener
	poller   *netpoll.Poller // nil: a reader goroutine per socket

	// base outlives the listener: produce callbacks and socket writers use
	// it until the drain is over.
	base       context.Context
	cancelBase context.CancelFunc

	deliveryCfg delivery.Config

	// mu guards conns and draining; drainingCh is closed when draining is
	// set, so sockets check it without the lock.
	mu         sync.Mutex
	conns      map[*conn]struct{}
	draining   bool
	drainingCh chan struct{}
	connWG     sync.WaitGroup
}

// replayConcurrency bounds the history reads of replays in flight per
// instance (see replayReader).
const replayConcurrency = 64

// New connects the gateway's clients, creates the incoming topic when
// missing and binds HTTP_ADDR.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Gateway, error) {
	brokers, err := kafka.ParseBrokers(cfg.Kafka.Bootstrap)
	if err != nil {
		return nil, err
	}
	verifier, err := auth.NewVerifierFromConfig(cfg.Auth)
	if err != nil {
		return nil, err
	}
	instance := cfg.Instance()
	g := &Gateway{
		cfg: cfg, instance: instance, log: log.With("instance", instance), verifier: verifier,
		conns: map[*conn]struct{}{}, drainingCh: make(chan struct{}),
		tracer: otel.Tracer("github.com/chatrelay/chat/internal/gateway"),
	}
	g.base, g.cancelBase = context.WithCancel(context.WithoutCancel(ctx))
	g.rdb, err = redisbus.NewClient(cfg.Redis.URL)
	if err != nil {
		return nil, err
	}
	g.wire(reg)
	g.producer, err = kafka.NewClient(kafka.ClientConfig{
		Brokers: brokers, ClientID: "websocket-server-" + instance, Logger: g.log, Registerer: reg, Linger: cfg.Kafka.Linger,
		// A client waiting for its ack learns within this bound that the
		// message was not taken, and can send it again.
		DeliveryTimeout: cfg.ProduceTimeout,
	})
	if err != nil {
		_ = g.rdb.Close()
		return nil, err
	}
	if err := kafka.EnsureTopics(ctx, g.producer, cfg.Kafka.Partitions, cfg.Kafka.Replication, kafka.TopicIncoming); err != nil {
		g.closeClients()
		return nil, err
	}
	g.upgrader = newUpgrader(g.checkOrigin)
	if cfg.Netpoll {
		// Without epoll (not Linux) every socket gets a reader goroutine.
		if g.poller, err = netpoll.New(true); err != nil {
			g.log.Warn("netpoll unavailable; one reader goroutine per socket", "error", err)
		}
	}
	g.echo = g.routes()
	g.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		g.closeClients()
		return nil, fmt.Errorf("HTTP_ADDR: listen %s: %w", cfg.HTTPAddr, err)
	}
	return g, nil
}

// wire builds the parts on the Redis client: the pub/sub hub, the history
// and its readers, the limits, the metrics, and the token re-checks.
func (g *Gateway) wire(reg prometheus.Registerer) {
	g.hub = redisbus.NewHub(g.rdb, g.log)
	g.history = history.New(g.rdb, g.cfg.History)
	g.replays = newReplayReader(g.history, replayConcurrency)
	g.marks = newDeliveredMarks(g.history, g.log)
	g.lim = limitsOf(ratelimit.New(g.rdb, g.cfg.Limits))
	g.m = newMetrics(reg, func() float64 { return float64(g.hub.Users()) }, g.cfg.Limits.InstanceSockets)
	g.hub.OnInvalid = func(error) { g.m.dropped.WithLabelValues(dropInvalid).Inc() }
	g.deliveryCfg = delivery.DefaultConfig()
	g.deliveryCfg.OnDuplicate = g.m.duplicates.Inc
	g.deliveryCfg.OnRetry = func(err error) {
		g.m.replayRetries.Inc()
		g.log.Warn("history replay failed; retrying", "error", err)
	}
	g.verifier.SetLogger(g.log)
	g.verifier.OnChange(func() { go g.closeRevoked() })
}

// newUpgrader: a socket keeps its read buffer for life, a small one handed
// over at the hijack (see smallReader; ReadBufferSize 0 makes gorilla use
// it), since frames larger than the buffer are read past it. Write buffers
// come from a pool and are held only while a frame is written.
func newUpgrader(checkOrigin func(*http.Request) bool) websocket.Upgrader {
	return websocket.Upgrader{
		WriteBufferSize:  4096,
		WriteBufferPool:  &sync.Pool{},
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      checkOrigin,
		Error:            upgradeError,
	}
}

// Addr is the bound public address.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Checks are the gateway's readiness checks.
func (g *Gateway) Checks() map[string]ops.Check {
	return map[string]ops.Check{
		"gateway.kafka": func(ctx context.Context) error { return kafka.Ping(ctx, g.producer) },
		"gateway.redis": func(ctx context.Context) error { return redisbus.Ping(ctx, g.rdb) },
	}
}

func (g *Gateway) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// The client address for per-IP limits: nginx sets X-Real-IP; it is
	// believed only from TRUSTED_PROXY_NETWORKS (validated at load).
	trusted, _ := ratelimit.ParseNetworksOf("TRUSTED_PROXY_NETWORKS", g.cfg.TrustedProxies)
	e.IPExtractor = realIPExtractor(trusted)
	e.Use(middleware.Recover())
	e.Use(httpTracing(g.tracer, "/healthz"))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/ws", g.handleWS)
	// The web chat page (embedded static files).
	ui := echo.WrapHandler(webui.Handler())
	e.GET("/", ui)
	e.GET("/index.html", ui)
	e.GET("/app.js", ui)
	e.GET("/app.css", ui)
	return e
}

// realIPExtractor reads X-Real-IP from trusted peers only.
func realIPExtractor(trusted []netip.Prefix) echo.IPExtractor {
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromRealIPHeader(opts...)
}

// Handle mounts an extra route (the dev stack's /dev/token); call it before
// Run. The production binary mounts none.
func (g *Gateway) Handle(method, path string, h http.Handler) {
	g.echo.Add(method, path, echo.WrapHandler(h))
}

// Run serves until ctx ends, then shuts down in order: stop accepting, stop
// reading client frames, flush the producer so every accepted message gets
// its ack, tell clients to reconnect elsewhere (1001), then close the Redis
// subscription and the clients.
func (g *Gateway) Run(ctx context.Context) error {
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubDone := make(chan error, 1)
	go func() { hubDone <- g.hub.Run(hubCtx) }()
	marksDone := make(chan struct{})
	go func() { g.marks.Run(hubCtx); close(marksDone) }()
	keysDone := make(chan struct{})
	go func() { _ = g.verifier.Run(hubCtx); close(keysDone) }()

	srv := &http.Server{Handler: g.echo, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(g.ln) }()
	g.log.Info("websocket-server listening", "addr", g.Addr())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("http server: %w", err)
	}

	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.Drain)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("http shutdown: %w", serr))
	}
	g.drainConns(sctx)
	stopHub()
	<-hubDone
	<-marksDone
	<-keysDone
	g.cancelBase()
	g.closeClients()
	if g.poller != nil {
		_ = g.poller.Close()
	}
	return err
}

// drainConns stops intake on every socket, waits for the broker to ack what
// was accepted, then closes each socket with 1001 once its queue is written.
func (g *Gateway) drainConns(ctx context.Context) {
	g.mu.Lock()
	if !g.draining {
		g.draining = true
		close(g.drainingCh) // sockets refuse new messages from now on
	}
	conns := g.connsLocked()
	g.mu.Unlock()
	if err := g.producer.Flush(ctx); err != nil {
		g.log.Warn("producer flush on shutdown", "error", err)
	}
	for _, c := range conns {
		c.closeAfterQueue(&protocol.Shutdown)
	}
	done := make(chan struct{})
	go func() { g.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.log.Warn("sockets did not close in time; dropping them")
		for _, c := range conns {
			c.abort()
		}
	}
}

func (g *Gateway) closeClients() {
	g.producer.Close()
	_ = g.rdb.Close()
}

func (g *Gateway) connsLocked() []*conn {
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	return conns
}

func (g *Gateway) isDraining() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.draining
}

// closeRevoked closes every socket whose token's key left the key set
// (the verifier reloaded its key file).
func (g *Gateway) closeRevoked() {
	g.mu.Lock()
	conns := g.connsLocked()
	g.mu.Unlock()
	for _, c := range conns {
		if r := c.tokenRefusal(); r != nil {
			c.terminate(r)
		}
	}
}

func (g *Gateway) register(c *conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining {
		return false
	}
	g.conns[c] = struct{}{}
	g.connWG.Add(1)
	g.m.open.Inc()
	return true
}

func (g *Gateway) unregister(c *conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.m.open.Dec()
	g.connWG.Done()
}

// frameLimits are the protocol limits from the configuration.
func (g *Gateway) frameLimits() protocol.Limits {
	return protocol.Limits{MaxContentBytes: g.cfg.MaxContentBytes}
}
