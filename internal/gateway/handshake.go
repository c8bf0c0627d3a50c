package gateway

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/ids"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// handleWS admits a connection, then opens it. Everything that can refuse
// the client without holding anything happens in admit, as a plain HTTP
// status; open takes the socket's resources one by one and gives back what
// it took if a later step fails.
func (g *Gateway) handleWS(c echo.Context) error {
	q := c.Request().URL.Query()
	userID, resume := q.Get("userid"), q.Get("resume")
	grant, r, err := g.admit(c, userID, resume)
	if r != nil {
		return g.refuse(c, r, err)
	}
	return g.open(c, userID, resume, grant)
}

// admit checks the address's connect rate, the token, the origin, the
// resume cursor and whether the instance is shutting down.
func (g *Gateway) admit(c echo.Context, userID, resume string) (auth.Grant, *protocol.Refusal, error) {
	r := c.Request()
	if res, err := g.lim.IPConnects.Allow(r.Context(), c.RealIP()); err != nil {
		return auth.Grant{}, &protocol.Unavailable, err
	} else if !res.Allowed {
		g.m.limited.WithLabelValues(ratelimit.LimitIPConnects).Inc()
		c.Response().Header().Set("Retry-After", retryAfter(res.RetryAfter))
		return auth.Grant{}, &protocol.IPRateLimited, nil
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	grant, err := g.verifier.Check(token, userID)
	if err != nil {
		reason := auth.ReasonOther
		var ae *auth.Error
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		g.m.authRefusals.WithLabelValues(reason).Inc()
		g.log.InfoContext(r.Context(), "connection refused", "reason", reason, "remote", c.RealIP())
		return auth.Grant{}, &protocol.Unauthorized, nil
	}
	switch {
	case !g.checkOrigin(r):
		g.log.InfoContext(r.Context(), "connection refused", "reason", "origin", "remote", c.RealIP())
		return auth.Grant{}, &protocol.BadOrigin, nil
	case resume != "" && !cursor.Valid(resume):
		return auth.Grant{}, &protocol.BadResume, nil
	case g.isDraining():
		return auth.Grant{}, &protocol.Draining, nil
	}
	return grant, nil, nil
}

// open takes, in order, the user's socket slot, the subscription to the
// user's channel (confirmed before the upgrade, so nothing published after
// the first replay's read is missed), the upgrade, the instance's socket
// cap and the registration; then it starts the socket.
func (g *Gateway) open(c echo.Context, userID, resume string, grant auth.Grant) error {
	ctx := c.Request().Context()
	cn := newConn(g, userID, resume, grant)
	cn.connID = g.instance + ":" + ids.New()
	var undo undoStack
	if ok, err := g.lim.Sockets.Acquire(ctx, userID, cn.connID); err != nil {
		return g.refuse(c, &protocol.Unavailable, err)
	} else if !ok {
		g.m.limited.WithLabelValues(ratelimit.LimitUserSockets).Inc()
		return g.refuse(c, &protocol.UserSockets, nil)
	}
	// The cleanup outlives the request: it must not hold the request's
	// context (and with it the request and its span) for the socket's life.
	undo.push(func() {
		if err := cn.slot.release(g.base, g.lim.Sockets, userID, cn.connID); err != nil {
			g.log.Warn("socket slot not released; it expires by itself", "error", err)
		}
	})
	unsubscribe, err := g.hub.Subscribe(ctx, userID, cn.stream)
	if err != nil {
		undo.run()
		return g.refuse(c, &protocol.Unavailable, err)
	}
	undo.push(unsubscribe)
	sr := &smallReader{ResponseWriter: c.Response()}
	ws, err := g.upgrader.Upgrade(sr, c.Request(), nil)
	if err != nil {
		undo.run()
		g.m.connects.WithLabelValues(protocol.UpgradeFailed.Reason).Inc()
		return nil // the upgrader already answered
	}
	// The instance's socket cap is enforced after the upgrade: its refusal
	// is a close code (1013, try again later) the client can act on.
	if !g.lim.Instance.TryAcquire() {
		undo.run()
		g.m.limited.WithLabelValues(ratelimit.LimitInstanceSocket).Inc()
		g.refuseUpgraded(ws, &protocol.Full)
		return nil
	}
	undo.push(g.lim.Instance.Release)
	cn.attach(ws, sr.br)
	cn.cleanup = undo.run
	if !g.register(cn) {
		undo.run()
		cn.stream.Close()
		g.refuseUpgraded(ws, &protocol.Draining)
		return nil
	}
	g.m.connects.WithLabelValues(protocol.Accepted.Reason).Inc()
	cn.start()
	return nil
}

// undoStack gives back what a connection took, newest first, once.
type undoStack struct{ steps []func() }

func (u *undoStack) push(f func()) { u.steps = append(u.steps, f) }

func (u *undoStack) run() {
	for i := len(u.steps) - 1; i >= 0; i-- {
		u.steps[i]()
	}
	u.steps = nil
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
