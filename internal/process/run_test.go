package process

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/ops"
)

// partFunc adapts a function to Part.
type partFunc func(ctx context.Context) error

func (f partFunc) Run(ctx context.Context) error { return f(ctx) }

func quietTelemetry() *Telemetry {
	return &Telemetry{Service: "test", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: io.Discard, Registry: prometheus.NewRegistry()}
}

func opsServer(tel *Telemetry) *ops.Server {
	return &ops.Server{Addr: "127.0.0.1:0", Gatherer: tel.Registry, Log: tel.Log}
}

// A failing part stops the others, and its error is the result.
func TestRunOneFailureStopsTheOthers(t *testing.T) {
	tel := quietTelemetry()
	boom := errors.New("boom")
	stopped := make(chan struct{})
	waiter := partFunc(func(ctx context.Context) error { <-ctx.Done(); close(stopped); return ctx.Err() })
	failer := partFunc(func(context.Context) error { return boom })
	err := Run(context.Background(), tel, opsServer(tel), 5*time.Second, waiter, failer)
	if !errors.Is(err, boom) {
		t.Fatalf("want the part's error, got %v", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the other part was not stopped")
	}
}

// A part that does not finish within the timeout makes Run return an error
// naming the timeout instead of hanging.
func TestRunShutdownDeadline(t *testing.T) {
	tel := quietTelemetry()
	hang := make(chan struct{})
	defer close(hang)
	stuck := partFunc(func(context.Context) error { <-hang; return nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := Run(ctx, tel, opsServer(tel), 100*time.Millisecond, stuck)
	if err == nil || !strings.Contains(err.Error(), "within 100ms") {
		t.Fatalf("want the shutdown deadline error, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s", d)
	}
}

// The ops listener still answers while the parts drain, so probes and
// scrapes see the shutdown.
func TestRunOpsOutlivesParts(t *testing.T) {
	tel := quietTelemetry()
	srv := opsServer(tel)
	probed := make(chan int, 1)
	draining := partFunc(func(ctx context.Context) error {
		<-ctx.Done()
		resp, err := http.Get("http://" + srv.BoundAddr() + "/healthz")
		if err != nil {
			probed <- 0
			return nil
		}
		_ = resp.Body.Close()
		probed <- resp.StatusCode
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, tel, srv, 5*time.Second, draining) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code := <-probed; code != http.StatusOK {
		t.Fatalf("ops /healthz during the drain: %d, want 200", code)
	}
}
