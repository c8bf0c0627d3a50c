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
	"net/url"
	"slices"
	"strings"
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
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/redisbus"
)

// Gateway is the running websocket-server.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	verifier *auth.Verifier
	rdb      redis.UniversalClient
	producer *kgo.Client
	hub      *redisbus.Hub
	history  *history.Store
	marks    *deliveredMarks
	m        *metrics
	tracer   trace.Tracer
	upgrader websocket.Upgrader
	echo     *echo.Echo
	ln       net.Listener

	// base outlives the listener: produce callbacks and socket writers use
	// it until the drain is over.
	base       context.Context
	cancelBase context.CancelFunc

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	connWG   sync.WaitGroup
}

// New connects the gateway's clients, creates the incoming topic when
// missing and binds HTTP_ADDR.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Gateway, error) {
	brokers, err := kafka.ParseBrokers(cfg.Kafka.Bootstrap)
	if err != nil {
		return nil, err
	}
	verifier, err := auth.NewVerifier([]byte(cfg.AuthSecret), cfg.AuthLeeway)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg: cfg, log: log.With("instance", cfg.InstanceID), verifier: verifier,
		conns:  map[*conn]struct{}{},
		tracer: otel.Tracer("github.com/chatrelay/chat/internal/gateway"),
	}
	g.base, g.cancelBase = context.WithCancel(context.WithoutCancel(ctx))
	g.rdb, err = redisbus.NewClient(cfg.Redis.URL)
	if err != nil {
		return nil, err
	}
	g.hub = redisbus.NewHub(g.rdb, g.log)
	g.history = history.New(g.rdb, cfg.History)
	g.marks = newDeliveredMarks(g.history, g.log)
	g.m = newMetrics(reg, func() float64 { return float64(g.hub.Users()) })
	g.hub.OnInvalid = func(error) { g.m.dropped.WithLabelValues("invalid_payload").Inc() }
	g.producer, err = kafka.NewClient(kafka.ClientConfig{
		Brokers: brokers, ClientID: "websocket-server-" + cfg.InstanceID, Logger: g.log, Registerer: reg, Linger: cfg.Kafka.Linger,
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
	g.upgrader = websocket.Upgrader{
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &sync.Pool{},
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      g.checkOrigin,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, http.StatusText(status), status)
		},
	}
	g.echo = g.routes()
	g.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		g.closeClients()
		return nil, fmt.Errorf("HTTP_ADDR: listen %s: %w", cfg.HTTPAddr, err)
	}
	return g, nil
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
	e.Use(middleware.Recover())
	e.Use(httpTracing(g.tracer, "/healthz"))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/ws", g.handleWS)
	return e
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
	g.cancelBase()
	g.closeClients()
	return err
}

// drainConns stops intake on every socket, waits for the broker to ack what
// was accepted, then closes each socket with 1001 once its queue is written.
func (g *Gateway) drainConns(ctx context.Context) {
	g.mu.Lock()
	g.draining = true
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.stopReading()
	}
	if err := g.producer.Flush(ctx); err != nil {
		g.log.Warn("producer flush on shutdown", "error", err)
	}
	for _, c := range conns {
		c.closeAfterQueue(websocket.CloseGoingAway, "server shutting down, reconnect", "shutdown")
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

func (g *Gateway) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return slices.ContainsFunc(g.cfg.AllowedOrigins, func(o string) bool { return strings.EqualFold(strings.TrimSpace(o), origin) })
}

// handleWS authenticates, subscribes the user and upgrades. Everything that
// can refuse the client happens before the upgrade, as a plain HTTP status.
func (g *Gateway) handleWS(c echo.Context) error {
	r := c.Request()
	userID := r.URL.Query().Get("userid")
	token := r.URL.Query().Get("token")
	if token == "" {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	ctx := r.Context()
	if err := g.verifier.Verify(token, userID); err != nil {
		var ae *auth.Error
		reason := auth.ReasonOther
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		g.m.connects.WithLabelValues("unauthorized").Inc()
		g.log.InfoContext(ctx, "connection refused", "reason", reason, "remote", c.RealIP())
		return c.JSON(http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
	}
	if !g.checkOrigin(r) {
		g.m.connects.WithLabelValues("bad_origin").Inc()
		g.log.InfoContext(ctx, "connection refused", "reason", "origin", "remote", c.RealIP())
		return c.JSON(http.StatusForbidden, map[string]string{"error": "origin not allowed"})
	}
	resume := r.URL.Query().Get("resume")
	if resume != "" && !protocol.ValidCursor(resume) {
		g.m.connects.WithLabelValues("bad_request").Inc()
		return c.JSON(http.StatusBadRequest, map[string]string{"error": "resume must be the cursor of an answer"})
	}
	g.mu.Lock()
	draining := g.draining
	g.mu.Unlock()
	if draining {
		g.m.connects.WithLabelValues("draining").Inc()
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": "server shutting down"})
	}

	cn := newConn(g, userID)
	unsubscribe, err := g.hub.Subscribe(ctx, userID, cn)
	if err != nil {
		g.m.connects.WithLabelValues("unavailable").Inc()
		g.log.WarnContext(ctx, "connection refused: cannot subscribe", "error", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": "temporarily unavailable"})
	}
	ws, err := g.upgrader.Upgrade(c.Response(), r, nil)
	if err != nil {
		unsubscribe()
		g.m.connects.WithLabelValues("upgrade_failed").Inc()
		return nil // the upgrader already answered
	}
	g.m.connects.WithLabelValues("accepted").Inc()
	if !g.register(cn) {
		unsubscribe()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		_ = ws.Close()
		return nil
	}
	cn.serve(ws, unsubscribe, resume)
	return nil
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
