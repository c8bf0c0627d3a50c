package kafka

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMetricsCountsOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewHandlerMetrics(reg)
	results := []error{nil, nil, errors.New("x"), context.Canceled}
	for _, res := range results {
		_ = Metrics(m)(func(context.Context, *kgo.Record) error { return res })(context.Background(), &kgo.Record{Topic: "t"})
	}
	for outcome, want := range map[string]float64{"ok": 2, "error": 1, "canceled": 1} {
		if got := testutil.ToFloat64(m.records.WithLabelValues("t", outcome)); got != want {
			t.Errorf("%s: %v want %v", outcome, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Fatalf("duration series %d", n)
	}
}
