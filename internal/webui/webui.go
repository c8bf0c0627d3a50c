// Package webui is the browser chat client: one small page (HTML, script,
// style sheet, all embedded) that signs in, talks the /ws protocol, shows
// the conversation and reconnects on its own, resuming from the cursor of
// the last answer it saw so nothing produced while it was away is lost.
//
// Handler serves the page with a strict Content-Security-Policy (same origin
// only, plus ws:/wss: for the socket). DevTokenHandler mints tokens for the
// page's "dev sign-in"; only the dev stack mounts it, never production.
package webui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/chatrelay/chat/internal/auth"
)

//go:embed static
var staticFS embed.FS

// ContentSecurityPolicy is sent with every page and asset: nothing but this
// origin's own script and style, no inline code, no framing, and sockets
// only (connect-src) besides same-origin fetches.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type asset struct {
	body        []byte
	contentType string
	etag        string
}

var assets = loadAssets()

func loadAssets() map[string]asset {
	m := map[string]asset{}
	_ = fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) { // do not depend on the host's mime tables
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		}
		sum := sha256.Sum256(b)
		m["/"+strings.TrimPrefix(p, "static/")] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return m
}

// Handler serves the page at / (and /index.html) and its assets
// (/app.js, /app.css). Everything else is 404. Responses revalidate on
// every load (Cache-Control: no-cache with a strong ETag), so a deploy is
// picked up at once while unchanged files cost a 304.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		if p == "/" {
			p = "/index.html"
		}
		a, ok := assets[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		securityHeaders(h)
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(a.body)))
	})
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// DevTokenHandler answers GET /dev/token?userid=… with {"token":"…"} minted
// by mint. Without a userid it answers 400, which is how the page learns
// that dev sign-in is offered (a server without it answers 404).
//
// It hands a token to anyone who asks: mount it only in the dev stack.
func DevTokenHandler(mint func(user string) (string, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		securityHeaders(h)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "application/json")
		if r.Method != http.MethodGet {
			h.Set("Allow", "GET")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "GET only"})
			return
		}
		user := r.URL.Query().Get("userid")
		if !auth.ValidUserID(user) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "userid: 1-64 characters of [A-Za-z0-9._:-]"})
			return
		}
		tok, err := mint(user)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "could not mint a token"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
