package gateway

import (
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

	"github.com/chatrelay/chat/internal/protocol"
)

// The one place a refusal (internal/protocol's table) becomes what the
// client sees: an HTTP status before the upgrade, a close frame after it,
// or an error frame on an open socket. Each is counted under its Reason.

// refuse answers a connection attempt before the upgrade; err (if any) is
// logged here, once.
func (g *Gateway) refuse(c echo.Context, r *protocol.Refusal, err error) error {
	g.m.connects.WithLabelValues(r.Reason).Inc()
	if err != nil {
		g.log.WarnContext(c.Request().Context(), "connection refused", "outcome", r.Reason, "error", err)
	}
	return c.JSON(r.Status, map[string]string{"error": r.Message})
}

// refuseUpgraded closes a socket refused right after the upgrade, before
// it was ever used.
func (g *Gateway) refuseUpgraded(ws *websocket.Conn, r *protocol.Refusal) {
	g.m.connects.WithLabelValues(r.Reason).Inc()
	code := r.Code
	if code == 0 {
		code = protocol.CloseGoingAway
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, r.Message), time.Now().Add(time.Second))
	_ = ws.Close()
}

// refuseFrame answers a refused frame with an error frame; args fill the
// message's %s. The socket stays open.
func (c *conn) refuseFrame(r *protocol.Refusal, clientID, corr string, args ...any) {
	c.g.m.rejected.WithLabelValues(r.Reason).Inc()
	c.enqueue(c.errorFrame(r.Text(args...), clientID, corr), true)
}

// upgradeError is the upgrader's own answer to a bad handshake.
func upgradeError(w http.ResponseWriter, _ *http.Request, status int, _ error) {
	http.Error(w, http.StatusText(status), status)
}
