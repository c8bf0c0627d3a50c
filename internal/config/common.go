package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"time"
)

// Kafka is the broker configuration shared by every service.
type Kafka struct {
	Bootstrap   string `env:"KAFKA_BOOTSTRAP_SERVERS" envDefault:"localhost:9092"`
	Partitions  int32  `env:"KAFKA_TOPIC_PARTITIONS" envDefault:"12"`
	Replication int16  `env:"KAFKA_REPLICATION_FACTOR" envDefault:"1"`
	// Linger holds produced records back to batch them. 0: a chat message
	// is latency-bound, and the client batches anyway while a produce
	// request to the partition is in flight; 2 ms per hop took the
	// unloaded median from 4.0 to 6.3 ms (docs/performance.md).
	Linger time.Duration `env:"KAFKA_PRODUCER_LINGER" envDefault:"0s"`
	// SessionTimeout is how long a consumer that died silently and did not
	// come back keeps its partitions before the group moves them. A crashed
	// instance that restarts takes its partitions back at once with its
	// INSTANCE_ID (static membership), and one that stops for good leaves
	// the group, so this only bounds the stall of an instance that vanished
	// without a restart (a lost node, a hard-killed pod whose replacement
	// has a new name). 10s: Kafka's default before 3.0, above the brokers'
	// 6s minimum; a false expiry only costs a rebalance and redelivered
	// records, which are de-duplicated (docs/takeover.md).
	SessionTimeout time.Duration `env:"KAFKA_SESSION_TIMEOUT" envDefault:"10s"`
	// InstanceID is this instance's stable identity: the consumers' group
	// instance id (static membership, KIP-345), so that a restarted
	// instance takes its partitions back without waiting for the session
	// timeout. Empty means the host name, which compose (the container id)
	// and Kubernetes (the pod name) keep across restarts. Each replica
	// needs its own: a second instance with the same id fences the first.
	InstanceID string `env:"INSTANCE_ID"`
}

// Instance is the instance id: INSTANCE_ID, or else the host name.
func (k Kafka) Instance() string {
	if k.InstanceID != "" {
		return k.InstanceID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		// No stable identity to claim: the consumers join as dynamic
		// members, as before static membership.
		return ""
	}
	return host
}

// Validate checks the broker settings.
func (k Kafka) Validate() error {
	switch {
	case k.Bootstrap == "":
		return errors.New("KAFKA_BOOTSTRAP_SERVERS: must not be empty")
	case k.Partitions < 1:
		return errors.New("KAFKA_TOPIC_PARTITIONS: must be at least 1")
	case k.Replication < 1:
		return errors.New("KAFKA_REPLICATION_FACTOR: must be at least 1")
	case k.Linger < 0:
		return errors.New("KAFKA_PRODUCER_LINGER: must not be negative")
	case k.SessionTimeout < time.Second:
		return errors.New("KAFKA_SESSION_TIMEOUT: must be at least 1s")
	case k.InstanceID != "" && !instanceIDPattern.MatchString(k.InstanceID):
		// Kafka's rule for a group instance id; checked here so that a bad
		// value stops the process at start, naming the variable, instead
		// of failing every join.
		return fmt.Errorf("INSTANCE_ID: %q must be 1-249 of [A-Za-z0-9._-]", k.InstanceID)
	}
	return nil
}

var instanceIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

// KafkaFetch is how long a consumer's fetch may wait at the broker for
// records to gather: Kafka's fetch.min.bytes and fetch.max.wait.ms. The
// defaults answer a fetch as soon as one record is there, which keeps a
// message's hops as short as they go. Raising the minimum makes every
// fetch wait until that many bytes or the wait: fewer, fuller fetches,
// whose records then share Redis pipelines and produce requests, so less
// CPU per message under load, and up to the wait added to every message
// on a quiet system (docs/performance.md, "the tenth round", has both).
type KafkaFetch struct {
	MinBytes int32         `env:"KAFKA_FETCH_MIN_BYTES" envDefault:"1"`
	MaxWait  time.Duration `env:"KAFKA_FETCH_MAX_WAIT" envDefault:"50ms"`
}

// MaxFetchMinBytes is the most KAFKA_FETCH_MIN_BYTES may ask for: the
// client's largest fetch (franz-go's FetchMaxBytes default), which a larger
// minimum could never reach.
const MaxFetchMinBytes = 50 << 20

// Validate checks the fetch settings.
func (f KafkaFetch) Validate() error {
	switch {
	case f.MinBytes < 1 || f.MinBytes > MaxFetchMinBytes:
		return fmt.Errorf("KAFKA_FETCH_MIN_BYTES: must be 1 to %d", MaxFetchMinBytes)
	case f.MaxWait < 10*time.Millisecond:
		// The client refuses less, and would name its own option.
		return errors.New("KAFKA_FETCH_MAX_WAIT: must be at least 10ms")
	case f.MaxWait > 30*time.Second:
		// Every message may wait this long at each hop when the minimum
		// is not reached: a longer one is a typo, not a tuning.
		return errors.New("KAFKA_FETCH_MAX_WAIT: must be at most 30s")
	}
	return nil
}

// Redis is the Redis configuration shared by every service. The URL may hold
// a password, hence secret.
type Redis struct {
	URL string `env:"REDIS_URL" envDefault:"redis://localhost:6379/0" secret:"true"`
}

// Ops is the operational listener and log level of every service.
type Ops struct {
	Addr     string `env:"OPS_ADDR" envDefault:":9090"`
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// ShutdownTimeout is the hard bound on an orderly shutdown.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"25s"`
}

// Validate checks the ops settings.
func (o Ops) Validate() error {
	if _, _, err := net.SplitHostPort(o.Addr); err != nil {
		return fmt.Errorf("OPS_ADDR: %q is not host:port: %w", o.Addr, err)
	}
	if o.ShutdownTimeout <= 0 {
		return errors.New("SHUTDOWN_TIMEOUT: must be positive")
	}
	return nil
}
