// Package gateway is the websocket-server service: it authenticates chat
// clients, accepts their messages onto Kafka (acknowledging only after the
// broker did), and delivers the answers published on their Redis channels to
// every socket the user holds on this instance.
package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
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
	"github.com/chatrelay/chat/internal/ids"
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
	log      *slog.Logger
	verifier *auth.Verifier
	rdb      redis.UniversalClient
	producer *kgo.Client
	hub      *redisbus.Hub
	history  *history.Store
	marks    *deliveredMarks
	lim      *ratelimit.Limiters
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
	verifier, err := auth.NewVerifierFromConfig(cfg.Auth)
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
	g.lim = ratelimit.New(g.rdb, cfg.Limits)
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
		// A socket keeps its read buffer for life: a small one, handed
		// over at the hijack (see smallReader; ReadBufferSize 0 makes
		// gorilla use it), since frames larger than the buffer are read
		// past it. Write buffers come from a pool and are held only while
		// a frame is written.
		WriteBufferSize:  4096,
		WriteBufferPool:  &sync.Pool{},
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      g.checkOrigin,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, http.StatusText(status), status)
		},
	}
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
	// trusted only from private and loopback peers (the proxy).
	e.IPExtractor = echo.ExtractIPFromRealIPHeader(echo.TrustLoopback(true), echo.TrustPrivateNet(true))
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
	if g.poller != nil {
		_ = g.poller.Close()
	}
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
	if res, err := g.lim.IPConnects.Allow(ctx, c.RealIP()); err != nil {
		return g.refuse(c, "unavailable", http.StatusServiceUnavailable, "temporarily unavailable", err)
	} else if !res.Allowed {
		g.m.limited.WithLabelValues(ratelimit.LimitIPConnects).Inc()
		c.Response().Header().Set("Retry-After", retryAfter(res.RetryAfter))
		return g.refuse(c, "rate_limited", http.StatusTooManyRequests, "too many connection attempts", nil)
	}
	if err := g.verifier.Verify(token, userID); err != nil {
		var ae *auth.Error
		reason := auth.ReasonOther
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		g.m.authRefusals.WithLabelValues(reason).Inc()
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
	connID := g.cfg.InstanceID + ":" + ids.New()
	if ok, err := g.lim.Sockets.Acquire(ctx, userID, connID); err != nil {
		return g.refuse(c, "unavailable", http.StatusServiceUnavailable, "temporarily unavailable", err)
	} else if !ok {
		g.m.limited.WithLabelValues(ratelimit.LimitUserSockets).Inc()
		return g.refuse(c, "rate_limited", http.StatusTooManyRequests, "too many connections for this user", nil)
	}
	// The cleanup outlives the request: it must not hold the request's
	// context (and with it the request and its span) for the socket's life.
	releaseSocket := func() {
		rctx, cancel := context.WithTimeout(g.base, 2*time.Second)
		defer cancel()
		if err := g.lim.Sockets.Release(rctx, userID, connID); err != nil {
			g.log.Warn("socket slot not released; it expires by itself", "error", err)
		}
	}

	cn := newConn(g, userID)
	cn.connID = connID
	unsubscribe, err := g.hub.Subscribe(ctx, userID, cn)
	if err != nil {
		releaseSocket()
		g.m.connects.WithLabelValues("unavailable").Inc()
		g.log.WarnContext(ctx, "connection refused: cannot subscribe", "error", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": "temporarily unavailable"})
	}
	sr := &smallReader{ResponseWriter: c.Response()}
	ws, err := g.upgrader.Upgrade(sr, r, nil)
	if err != nil {
		releaseSocket()
		unsubscribe()
		g.m.connects.WithLabelValues("upgrade_failed").Inc()
		return nil // the upgrader already answered
	}
	// The instance's socket cap is enforced after the upgrade: its refusal
	// is a close code (1013, try again later) the client can act on.
	if !g.lim.Instance.TryAcquire() {
		releaseSocket()
		unsubscribe()
		g.m.limited.WithLabelValues(ratelimit.LimitInstanceSocket).Inc()
		g.m.connects.WithLabelValues("full").Inc()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "server full, try again"), time.Now().Add(time.Second))
		_ = ws.Close()
		return nil
	}
	g.m.connects.WithLabelValues("accepted").Inc()
	cleanup := func() {
		unsubscribe()
		releaseSocket()
		g.lim.Instance.Release()
	}
	cn.attach(ws, sr.br, cleanup)
	if !g.register(cn) {
		cleanup()
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		_ = ws.Close()
		return nil
	}
	cn.start(resume)
	return nil
}

// refuse answers a connection attempt before the upgrade; err (if any) is
// logged here, once.
func (g *Gateway) refuse(c echo.Context, outcome string, status int, msg string, err error) error {
	g.m.connects.WithLabelValues(outcome).Inc()
	if err != nil {
		g.log.WarnContext(c.Request().Context(), "connection refused", "outcome", outcome, "error", err)
	}
	return c.JSON(status, map[string]string{"error": msg})
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(d, time.Second).Seconds())))
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

// smallReader hands gorilla/websocket a small read buffer of our own at the
// hijack instead of net/http's 4 KiB one, and keeps it: with the poller the
// socket is read again only while the buffer is empty, which only its owner
// can see.
type smallReader struct {
	http.ResponseWriter
	br *bufio.Reader
}

// readBufferSize is each socket's read buffer; gorilla needs more than 256
// bytes to take it, and a control frame (up to 131 bytes) must fit.
const readBufferSize = 512

func (s *smallReader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Reader.Buffered() == 0 {
		brw.Reader = bufio.NewReaderSize(nc, readBufferSize)
	}
	s.br = brw.Reader
	return nc, brw, nil
}
