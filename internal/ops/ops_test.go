package ops

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Inc()
	s := &Server{Gatherer: reg}
	redisUp := true
	s.AddCheck("redis", func(context.Context) error {
		if redisUp {
			return nil
		}
		return errors.New("connection refused")
	})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name     string
		path     string
		redisUp  bool
		status   int
		contains string
	}{
		{"healthz", "/healthz", true, 200, "ok"},
		{"healthz ignores deps", "/healthz", false, 200, "ok"},
		{"ready", "/readyz", true, 200, `"ready"`},
		{"not ready", "/readyz", false, 503, "connection refused"},
		{"metrics", "/metrics", true, 200, "chat_test_total 1"},
		{"pprof", "/debug/pprof/", true, 200, "goroutine"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			redisUp = tc.redisUp
			code, body := get(tc.path)
			if code != tc.status || !strings.Contains(body, tc.contains) {
				t.Fatalf("%s: %d %q", tc.path, code, body)
			}
			if tc.path == "/readyz" {
				var m map[string]any
				if err := json.Unmarshal([]byte(body), &m); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
