package grouplag

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/telemetry"
)

// States are the group states the broker reports (classic and KIP-848
// groups); anything else is exported as Unknown, so the label stays bounded.
var States = []string{"Stable", "PreparingRebalance", "CompletingRebalance", "Assigning", "Reconciling", "Empty", "Dead", "Unknown"}

type metrics struct {
	lag     *prometheus.GaugeVec
	members *prometheus.GaugeVec
	state   *prometheus.GaugeVec
	errors  *prometheus.CounterVec
}

// newMetrics registers the exporter's metrics. They carry no "service"
// label: one exporter runs per process whatever services it holds, and the
// rules de-duplicate across processes by group, topic and partition.
func newMetrics(reg prometheus.Registerer, groups []string) *metrics {
	opts := func(name, help string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Namespace: telemetry.Namespace, Subsystem: "kafka", Name: name, Help: help}
	}
	m := &metrics{
		lag: prometheus.NewGaugeVec(opts("group_lag",
			"Records of the partition the group has not committed, from the broker's view (end offset - committed offset; before a first commit, end - log start offset), whether or not a consumer is alive."),
			[]string{"group", "topic", "partition"}),
		members: prometheus.NewGaugeVec(opts("group_members",
			"Members of the consumer group as the broker lists them (0: no consumer is alive)."), []string{"group"}),
		state: prometheus.NewGaugeVec(opts("group_state",
			"1 for the consumer group's state as the broker reports it, 0 for the others."), []string{"group", "state"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: telemetry.Namespace, Subsystem: "kafka", Name: "group_lag_errors_total",
			Help: "Measurements of the group that failed (broker unreachable, coordinator moving)."}, []string{"group"}),
	}
	if reg != nil {
		reg.MustRegister(m.lag, m.members, m.state, m.errors)
	}
	for _, g := range groups {
		m.errors.WithLabelValues(g)
	}
	return m
}

// setState sets the group's state one-hot.
func (m *metrics) setState(group, state string) {
	if !slices.Contains(States, state) {
		state = "Unknown"
	}
	for _, s := range States {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(group, s).Set(v)
	}
}

// drop removes a group's measured series (not its error count).
func (m *metrics) drop(group string) {
	for _, vec := range []*prometheus.GaugeVec{m.lag, m.members, m.state} {
		vec.DeletePartialMatch(prometheus.Labels{"group": group})
	}
}
