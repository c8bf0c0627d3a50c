package webui

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandlerServesAssetsWithHeaders(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, ct := range map[string]string{
		"/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8",
		"/app.js": "text/javascript; charset=utf-8", "/app.css": "text/css; charset=utf-8",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct || len(body) == 0 {
			t.Fatalf("%s: %d %q (%d bytes)", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		if resp.Header.Get("Content-Security-Policy") != ContentSecurityPolicy || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: security headers %v", path, resp.Header)
		}
		if resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("ETag") == "" {
			t.Fatalf("%s: cache headers %v", path, resp.Header)
		}
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		resp2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.StatusCode != http.StatusNotModified {
			t.Fatalf("%s: revalidation got %d", path, resp2.StatusCode)
		}
	}
	for _, path := range []string{"/nope", "/static/app.js", "/../go.mod"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
	resp, err := http.Post(srv.URL+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

// The script never turns content into markup.
func TestNoMarkupSinks(t *testing.T) {
	js := string(assets["/app.js"].body)
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(js, sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
	html := string(assets["/index.html"].body)
	if strings.Contains(html, "<script>") || strings.Contains(html, "style=") || regexp.MustCompile(`\son[a-z]+=`).MatchString(html) {
		t.Error("index.html has inline script or style, which the CSP forbids")
	}
}

func TestDevTokenHandler(t *testing.T) {
	h := DevTokenHandler(func(u string) (string, error) {
		if u == "broken" {
			return "", errors.New("boom")
		}
		return "tok-" + u, nil
	})
	for _, tc := range []struct {
		method, query string
		status        int
		body          string
	}{
		{"GET", "?userid=alice", 200, `{"token":"tok-alice"}`},
		{"GET", "", 400, `"error"`},
		{"GET", "?userid=a%20b", 400, `"error"`},
		{"GET", "?userid=broken", 500, `"error"`},
		{"POST", "?userid=alice", 405, `"error"`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, "/dev/token"+tc.query, nil))
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
			t.Errorf("%s %s: %d %s", tc.method, tc.query, rec.Code, rec.Body)
		}
		if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: headers %v", tc.method, tc.query, rec.Header())
		}
	}
}
