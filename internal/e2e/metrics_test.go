package e2e

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// mustMetric finds one series in the stack's registry by name and a label.
func mustMetric(t *testing.T, s *stack, name, label, value string) prometheus.Collector {
	t.Helper()
	mfs, err := s.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return constCollector{mf, m}
				}
			}
		}
	}
	t.Fatalf("metric %s{%s=%q} not found", name, label, value)
	return nil
}

type constCollector struct {
	mf *dto.MetricFamily
	m  *dto.Metric
}

func (c constCollector) Describe(ch chan<- *prometheus.Desc) {}
func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	v := 0.0
	switch {
	case c.m.Counter != nil:
		v = c.m.GetCounter().GetValue()
	case c.m.Gauge != nil:
		v = c.m.GetGauge().GetValue()
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(c.mf.GetName(), "x", nil, nil), prometheus.UntypedValue, v)
}
