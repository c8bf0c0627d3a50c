package kafka

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/chatrelay/chat/internal/telemetry"
)

// NewLagGauge is the consumer lag each consumer exports for the partitions
// it owns: the partition's end offset minus the group's committed offset.
func NewLagGauge(reg prometheus.Registerer) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "kafka", Name: "consumer_lag",
		Help: "Records not yet committed by the group, per owned partition (end offset - committed offset).",
	}, []string{"group", "topic", "partition"})
	if reg != nil {
		reg.MustRegister(g)
	}
	return g
}

// reportLag refreshes the lag gauge every interval. It asks the broker for
// end offsets itself rather than reading them from fetches, so lag keeps
// rising while processing is stuck and polling has paused.
func (c *Consumer) reportLag(ctx context.Context, g *prometheus.GaugeVec, interval time.Duration) {
	adm := kadm.NewClient(c.cl)
	t := time.NewTicker(interval)
	defer t.Stop()
	reported := map[topicPartition]bool{}
	for {
		select {
		case <-ctx.Done():
			for tp := range reported {
				g.DeleteLabelValues(c.cfg.Group, tp.topic, strconv.Itoa(int(tp.partition)))
			}
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		ends, err := adm.ListEndOffsets(rctx, c.cfg.Topics...)
		cancel()
		if err != nil {
			continue
		}
		committed := c.cl.CommittedOffsets()
		c.mu.Lock()
		owned := make(map[topicPartition]bool, len(c.parts))
		for tp := range c.parts {
			owned[tp] = true
		}
		c.mu.Unlock()
		ends.Each(func(o kadm.ListedOffset) {
			tp := topicPartition{o.Topic, o.Partition}
			if o.Err != nil || !owned[tp] {
				return
			}
			at := int64(0)
			if eo, ok := committed[o.Topic][o.Partition]; ok && eo.Offset > 0 {
				at = eo.Offset
			}
			lag := o.Offset - at
			if lag < 0 {
				lag = 0
			}
			g.WithLabelValues(c.cfg.Group, o.Topic, strconv.Itoa(int(o.Partition))).Set(float64(lag))
			reported[tp] = true
		})
		for tp := range reported {
			if !owned[tp] {
				g.DeleteLabelValues(c.cfg.Group, tp.topic, strconv.Itoa(int(tp.partition)))
				delete(reported, tp)
			}
		}
	}
}
