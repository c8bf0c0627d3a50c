// Package grouplag measures the system's consumer groups from the broker's
// view: for every configured group and topic, the end offset of each
// partition minus the group's committed offset, plus the group's member
// count and state. It asks the broker, not the consumer, so the lag stays
// visible — and keeps growing — when every consumer of a group is dead,
// crash-looping or stuck in a rebalance, which is when it matters most (a
// consumer's own view would cover only the partitions a live consumer
// owns).
//
// Every service process runs one Exporter (process.Build), so the numbers
// survive the loss of any one service; Prometheus therefore receives each
// series once per process and the recording rules keep the largest
// (alerts/recording.yml).
package grouplag

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/kafka"
)

// staleRounds is how many intervals a group's last measurement is still
// exported while the broker does not answer. A short failure (a broker
// restart, a coordinator moving) must not drop the series, which would reset
// the alerts' `for`; a long one must not keep paging from a frozen value.
const staleRounds = 4

// Exporter is the part that measures the groups every interval.
type Exporter struct {
	cl       *kgo.Client
	adm      *kadm.Client
	targets  []Target
	interval time.Duration
	log      *slog.Logger
	m        *metrics

	lastOK  map[string]time.Time // per group: its last complete measurement
	failing map[string]bool      // per group: the last round failed (logged once)
}

// New builds the exporter and its own Kafka client (admin requests only; it
// joins no group). Nothing connects until Run.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Exporter, error) {
	targets, err := cfg.Targets()
	if err != nil {
		return nil, err
	}
	brokers, err := kafka.ParseBrokers(cfg.Kafka.Bootstrap)
	if err != nil {
		return nil, err
	}
	cl, err := kafka.NewClient(kafka.ClientConfig{Brokers: brokers, ClientID: "grouplag", Logger: log})
	if err != nil {
		return nil, fmt.Errorf("group lag: %w", err)
	}
	return newExporter(cl, targets, cfg.Interval, log, reg), nil
}

func newExporter(cl *kgo.Client, targets []Target, interval time.Duration, log *slog.Logger, reg prometheus.Registerer) *Exporter {
	return &Exporter{
		cl: cl, adm: kadm.NewClient(cl), targets: targets, interval: interval, log: log,
		m:      newMetrics(reg, groupsOf(targets)),
		lastOK: map[string]time.Time{}, failing: map[string]bool{},
	}
}

// Run measures at once and then every interval until ctx ends; it never
// fails the process: a broker that does not answer is counted and logged,
// and the rest of the process keeps running.
func (e *Exporter) Run(ctx context.Context) error {
	defer e.cl.Close()
	tick := time.NewTicker(e.interval)
	defer tick.Stop()
	for {
		e.Measure(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Measure runs one round (bounded by the interval, so a hung broker never
// stacks rounds) and exports it.
func (e *Exporter) Measure(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, e.interval)
	defer cancel()
	r, err := fetch(rctx, e.adm, e.targets)
	if ctx.Err() != nil {
		return // shutting down: not a broker failure
	}
	e.publish(compute(e.targets, r, err), time.Now())
}

// publish exports the groups measured and handles the ones that were not.
func (e *Exporter) publish(views map[string]*view, now time.Time) {
	for group, v := range views {
		if v.err != nil {
			e.failed(group, v.err, now)
			continue
		}
		if e.failing[group] {
			e.log.Info("group lag measured again", "group", group)
			e.failing[group] = false
		}
		e.lastOK[group] = now
		e.m.members.WithLabelValues(group).Set(float64(v.members))
		e.m.setState(group, v.state)
		for t, parts := range v.lag {
			for p, lag := range parts {
				e.m.lag.WithLabelValues(t.Group, t.Topic, strconv.Itoa(int(p))).Set(float64(lag))
			}
		}
	}
}

func (e *Exporter) failed(group string, err error, now time.Time) {
	e.m.errors.WithLabelValues(group).Inc()
	if !e.failing[group] {
		e.log.Warn("group lag not measured; the last values stay exported for a while", "group", group, "error", err,
			"kept_for", (staleRounds * e.interval).String())
		e.failing[group] = true
	}
	if last, ok := e.lastOK[group]; ok && now.Sub(last) > staleRounds*e.interval {
		e.m.drop(group)
		delete(e.lastOK, group)
	}
}
