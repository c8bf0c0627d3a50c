package grouplag

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/chatrelay/chat/internal/config"
)

// Config is the exporter's configuration. Every service process reads it:
// the exporter runs once per process, whatever services the process holds.
type Config struct {
	Kafka config.Kafka
	// Interval is how often every group is measured (one round of admin
	// requests per process, not per scrape); 0 turns the exporter off in
	// this process. 15s: Prometheus's scrape interval in compose, so each
	// scrape sees a fresh value and nothing is measured that no one reads.
	Interval time.Duration `env:"KAFKA_LAG_INTERVAL" envDefault:"15s"`
	// Groups are the consumer groups measured, as group=topic entries
	// separated by commas (a group on two topics is named twice). They are
	// configured rather than listed from the broker so that the metric's
	// labels stay bounded: a debugging consumer or a one-off tool (the
	// dlq-replay group) adds no series. Keep them equal to
	// AI_CONSUMER_GROUP and RELAY_GROUP.
	Groups string `env:"KAFKA_LAG_GROUPS" envDefault:"ai-consumer=incoming_messages,message-relay=responses"`
}

// Target is one group and a topic it consumes.
type Target struct {
	Group, Topic string
}

// maxTargets bounds the label values one process can create.
const maxTargets = 16

// Kafka's rule for topic names.
var topicPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

// Validate checks the settings; Kafka's only when the exporter is on, so
// that a process that turned it off is not stopped by it.
func (c Config) Validate() error {
	if c.Interval < 0 {
		return errors.New("KAFKA_LAG_INTERVAL: must not be negative")
	}
	if c.Interval == 0 {
		return nil
	}
	if c.Interval < 100*time.Millisecond {
		return errors.New("KAFKA_LAG_INTERVAL: at least 100ms (0 turns the exporter off)")
	}
	if _, err := c.Targets(); err != nil {
		return err
	}
	return c.Kafka.Validate()
}

// Enabled reports whether this process runs the exporter.
func (c Config) Enabled() bool { return c.Interval > 0 }

// Targets parses Groups.
func (c Config) Targets() ([]Target, error) {
	var out []Target
	seen := map[Target]bool{}
	for _, entry := range strings.Split(c.Groups, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		// A group id may hold '='; a topic may not, so the last one splits.
		i := strings.LastIndexByte(entry, '=')
		if i <= 0 {
			return nil, fmt.Errorf("KAFKA_LAG_GROUPS: %q is not group=topic", entry)
		}
		t := Target{Group: entry[:i], Topic: entry[i+1:]}
		if !topicPattern.MatchString(t.Topic) {
			return nil, fmt.Errorf("KAFKA_LAG_GROUPS: %q: the topic must be 1-249 of [A-Za-z0-9._-]", entry)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("KAFKA_LAG_GROUPS: names no group (set KAFKA_LAG_INTERVAL=0 to turn the exporter off)")
	case len(out) > maxTargets:
		return nil, fmt.Errorf("KAFKA_LAG_GROUPS: %d entries, at most %d", len(out), maxTargets)
	}
	return out, nil
}

// Covers fails unless every one of used is measured: a process that
// consumes with a group the exporter does not know would leave that group
// unwatched, and the default entry for a group no one uses would page for
// its records.
func (c Config) Covers(used ...Target) error {
	if !c.Enabled() {
		return nil
	}
	targets, err := c.Targets()
	if err != nil {
		return err
	}
	for _, u := range used {
		if !slices.Contains(targets, u) {
			return fmt.Errorf("KAFKA_LAG_GROUPS: %q does not name %s=%s, which this process consumes with (keep it equal to AI_CONSUMER_GROUP and RELAY_GROUP, or set KAFKA_LAG_INTERVAL=0)", c.Groups, u.Group, u.Topic)
		}
	}
	return nil
}
