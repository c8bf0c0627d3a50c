package testinfra

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// kafkaBindRetry bounds how long Start keeps trying to bind its fixed ports.
// A port we picked with FreePort can be grabbed for a moment by an outgoing
// connection's ephemeral port; waiting briefly beats a flaky failure.
const kafkaBindRetry = 5 * time.Second

// KafkaOption configures StartKafka.
type KafkaOption func(*kafkaConfig)

type kafkaConfig struct {
	brokers    int
	partitions int
	dataDir    bool
	topics     []string
	extra      []kfake.Opt
}

// WithPartitions sets how many partitions auto-created topics and topics
// created with -1 partitions get. kfake's default is 10; tests that reason
// about per-key ordering or consumer assignment usually want fewer.
func WithPartitions(n int) KafkaOption {
	return func(c *kafkaConfig) { c.partitions = n }
}

// WithBrokers runs n brokers instead of one, for tests of leader movement
// and coordinator failover (see Cluster().MoveTopicPartition).
func WithBrokers(n int) KafkaOption {
	return func(c *kafkaConfig) { c.brokers = n }
}

// WithDataDir makes the broker persist to a directory under t.TempDir(), so
// records, topics and committed group offsets survive Stop/Start and
// Restart. Without it a restart comes back empty, like a broker whose disk
// was wiped.
func WithDataDir() KafkaOption {
	return func(c *kafkaConfig) { c.dataDir = true }
}

// WithTopics creates topics (with the default partition count) before the
// first client connects, so consumers never race the producer's creation.
func WithTopics(topics ...string) KafkaOption {
	return func(c *kafkaConfig) { c.topics = append(c.topics, topics...) }
}

// WithKfakeOptions passes options straight to kfake.NewCluster for anything
// we do not model (SASL, logging, MaxVersions). They are applied after ours
// and on every Start, so they win.
func WithKfakeOptions(opts ...kfake.Opt) KafkaOption {
	return func(c *kafkaConfig) { c.extra = append(c.extra, opts...) }
}

// Kafka is an in-process kfake cluster owned by one test. Its ports are fixed
// at creation so that clients configured with Bootstrap() reconnect to the
// same addresses after Stop/Start, as they would to a restarted broker.
type Kafka struct {
	t       testing.TB
	ports   []int
	dataDir string
	opts    []kfake.Opt

	mu      sync.Mutex
	cluster *kfake.Cluster // nil while stopped

	connsMu sync.Mutex
	conns   map[int][]net.Conn // by broker port: connections it accepted
}

// StartKafka starts a kfake cluster (one broker by default) on fixed free
// loopback ports. Topic auto-creation is on, as in a default Kafka broker.
// t.Cleanup stops it.
func StartKafka(t testing.TB, opts ...KafkaOption) *Kafka {
	t.Helper()
	cfg := kafkaConfig{brokers: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.brokers < 1 {
		t.Fatalf("StartKafka: WithBrokers(%d): need at least one broker", cfg.brokers)
	}

	k := &Kafka{t: t, conns: map[int][]net.Conn{}}
	for range cfg.brokers {
		k.ports = append(k.ports, FreePort(t))
	}
	k.opts = []kfake.Opt{
		kfake.Ports(k.ports...),
		kfake.AllowAutoTopicCreation(),
		kfake.ListenFn(k.listen),
	}
	if cfg.partitions > 0 {
		k.opts = append(k.opts, kfake.DefaultNumPartitions(cfg.partitions))
	}
	if cfg.brokers > 1 {
		k.opts = append(k.opts, kfake.MaxVersions(withoutOffsetForLeaderEpoch()))
	}
	if len(cfg.topics) > 0 {
		k.opts = append(k.opts, kfake.SeedTopics(-1, cfg.topics...))
	}
	if cfg.dataDir {
		k.dataDir = t.TempDir()
		k.opts = append(k.opts, kfake.DataDir(k.dataDir))
	}
	k.opts = append(k.opts, cfg.extra...)

	t.Cleanup(k.Stop)
	k.Start()
	return k
}

// withoutOffsetForLeaderEpoch is the API of a broker that does not offer
// OffsetForLeaderEpoch, for clusters of several brokers, where KillBroker
// moves partition leaders. kfake answers that request wrongly after a leader
// change: asked for the end of the epoch a consumer read in, it answers
// "unknown epoch" (-1) whenever nothing was written in a later epoch yet,
// where Kafka answers the log end offset. franz-go then takes the log for
// truncated (as after an unclean election) and resets the partition: the
// consumers start it over from the beginning. Without the request the
// clients skip that validation, as against brokers older than 2.1 — which a
// fake with no real replicas, and so no truncation, loses nothing by.
func withoutOffsetForLeaderEpoch() *kversion.Versions {
	v := kversion.Stable()
	v.SetMaxKeyVersion(kmsg.OffsetForLeaderEpoch.Int16(), -1)
	return v
}

// Addrs returns the brokers' host:port addresses. They do not change across
// restarts.
func (k *Kafka) Addrs() []string {
	addrs := make([]string, len(k.ports))
	for i, p := range k.ports {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return addrs
}

// Bootstrap returns the comma-separated broker list, the form services read
// from KAFKA_BOOTSTRAP_SERVERS and kcat's -b takes.
func (k *Kafka) Bootstrap() string { return strings.Join(k.Addrs(), ",") }

// DataDir returns the persistence directory, or "" without WithDataDir.
func (k *Kafka) DataDir() string { return k.dataDir }

// Cluster returns the running kfake cluster for fault injection (Control,
// MoveTopicPartition, ...), or nil while stopped. Each Start creates a new
// cluster, so fetch it again after a restart.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}

// listen binds a broker's port and keeps the connections it accepts, so
// KillBroker can cut them as a crashed broker's peers see them cut.
func (k *Kafka) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return trackingListener{Listener: ln, k: k, port: port}, nil
}

type trackingListener struct {
	net.Listener
	k    *Kafka
	port int
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.k.connsMu.Lock()
		l.k.conns[l.port] = append(l.k.conns[l.port], c)
		l.k.connsMu.Unlock()
	}
	return c, err
}

// KillBroker takes broker node (0 to n-1 with WithBrokers(n)) out of the
// running cluster as a crash does: it stops accepting connections, every
// connection it had is cut, and each partition it led gets a new leader
// among the others (kfake's leader election moves every partition's
// leader at random), as do the group coordinators it held. kfake keeps one
// copy of each partition for all brokers, which stands for the replicas a
// replication factor of 3 keeps elsewhere: what this tests is the
// clients' side of a broker loss — leader and coordinator moves,
// connection errors, retried idempotent produces, redelivered fetches.
// RestartBroker brings it back.
func (k *Kafka) KillBroker(node int32) {
	k.t.Helper()
	c := k.Cluster()
	if c == nil || int(node) >= len(k.ports) {
		k.t.Fatalf("KillBroker(%d): no such running broker", node)
	}
	if err := c.RemoveNode(node); err != nil {
		k.t.Fatalf("KillBroker(%d): %v", node, err)
	}
	port := k.ports[node]
	k.connsMu.Lock()
	conns := k.conns[port]
	delete(k.conns, port)
	k.connsMu.Unlock()
	for _, conn := range conns {
		_ = conn.Close()
	}
}

// RestartBroker starts a broker KillBroker took out again, with its node id
// on its port; partition leaders move again, to all brokers.
func (k *Kafka) RestartBroker(node int32) {
	k.t.Helper()
	c := k.Cluster()
	if c == nil || int(node) >= len(k.ports) {
		k.t.Fatalf("RestartBroker(%d): no such broker", node)
	}
	deadline := time.Now().Add(kafkaBindRetry)
	for {
		_, _, err := c.AddNode(node, k.ports[node])
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			k.t.Fatalf("RestartBroker(%d): %v", node, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running reports whether the cluster is up.
func (k *Kafka) Running() bool { return k.Cluster() != nil }

// Start brings the cluster up on its fixed ports, reloading the data
// directory if there is one. It does nothing if the cluster is running.
func (k *Kafka) Start() {
	k.t.Helper()
	if err := k.start(); err != nil {
		k.t.Fatalf("start kfake: %v", err)
	}
}

// Stop shuts the cluster down, closing every client connection; with a data
// directory it first writes its state to disk. Stopping a stopped cluster
// does nothing.
func (k *Kafka) Stop() {
	k.mu.Lock()
	c := k.cluster
	k.cluster = nil
	k.mu.Unlock()
	if c != nil {
		c.Close()
	}
	k.connsMu.Lock()
	clear(k.conns) // closed with the cluster
	k.connsMu.Unlock()
}

// Restart stops and starts the cluster on the same addresses.
func (k *Kafka) Restart() {
	k.t.Helper()
	k.Stop()
	k.Start()
}

func (k *Kafka) start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cluster != nil {
		return nil
	}
	deadline := time.Now().Add(kafkaBindRetry)
	for {
		c, err := kfake.NewCluster(k.opts...)
		if err == nil {
			k.cluster = c
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return fmt.Errorf("kfake on %s: %w", strings.Join(k.Addrs(), ","), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// KafkaServerConfig configures RunKafkaServer.
type KafkaServerConfig struct {
	// Listen is the host:port to bind, e.g. "0.0.0.0:9092".
	Listen string
	// Advertise is the host:port clients are told to connect to in
	// metadata, e.g. "kafka:9092" inside a compose network. It defaults
	// to Listen, or to 127.0.0.1 on Listen's port when Listen's host is
	// empty or unspecified (0.0.0.0, ::), because clients cannot connect
	// to an unspecified address advertised by a remote broker.
	Advertise string
	// Partitions is the partition count of auto-created topics (kfake's
	// default of 10 when zero).
	Partitions int
	// DataDir, when set, persists records, topics and group offsets
	// there, so they survive a restart of the process.
	DataDir string
	// Topics are created at start if they do not exist yet.
	Topics []string
	// Logger receives kfake's logs; nil discards them.
	Logger kfake.Logger
}

// RunKafka runs a single kfake broker on addr until ctx is done, for a small
// command that stands in for Kafka in local runs and load tests. A
// non-empty dataDir makes its state survive restarts of the process.
func RunKafka(ctx context.Context, addr string, partitions int, dataDir string) error {
	return RunKafkaServer(ctx, KafkaServerConfig{Listen: addr, Partitions: partitions, DataDir: dataDir})
}

// RunKafkaServer is RunKafka with every setting exposed. It returns nil after
// a clean shutdown, which persists state to DataDir.
func RunKafkaServer(ctx context.Context, cfg KafkaServerConfig) error {
	advertise, err := kafkaAdvertised(cfg.Listen, cfg.Advertise)
	if err != nil {
		return err
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		// kfake binds 127.0.0.1 on the port it is given; we take over the
		// listen so the broker can bind any interface and advertise a name
		// clients in other containers can resolve.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, cfg.Listen)
			if err != nil {
				return nil, err
			}
			return kafkaAdvertisedListener{Listener: ln, addr: advertise}, nil
		}),
	}
	if cfg.Partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(cfg.Partitions))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(cfg.Logger))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kfake on %s: %w", cfg.Listen, err)
	}
	// Created here rather than with kfake.SeedTopics, which only seeds a
	// fresh data directory: a reloaded one may predate a newly added topic.
	for _, topic := range cfg.Topics {
		if err := c.CreateTopic(topic, -1, nil); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			c.Close()
			return fmt.Errorf("create topic %q: %w", topic, err)
		}
	}
	<-ctx.Done()
	c.Close()
	return nil
}

// kafkaAdvertised works out the address the broker puts in metadata.
func kafkaAdvertised(listen, advertise string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("kafka listen address %q: %w", listen, err)
	}
	if advertise != "" {
		if _, _, err := net.SplitHostPort(advertise); err != nil {
			return "", fmt.Errorf("kafka advertised address %q: %w", advertise, err)
		}
		return advertise, nil
	}
	if port == "0" {
		return "", fmt.Errorf("kafka listen address %q: a fixed port is required, clients reconnect to it after a restart", listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// kafkaAdvertisedListener reports the advertised address as its own, which
// is what kfake copies into metadata and coordinator responses.
type kafkaAdvertisedListener struct {
	net.Listener
	addr string
}

func (l kafkaAdvertisedListener) Addr() net.Addr { return kafkaAddr(l.addr) }

type kafkaAddr string

func (a kafkaAddr) Network() string { return "tcp" }
func (a kafkaAddr) String() string  { return string(a) }

// kcatTimeout bounds one kcat run: with -e it exits at the end of the log,
// but a broker that never answers would otherwise hang the test.
const kcatTimeout = 30 * time.Second

// KcatArgs returns the arguments for kcat (Debian's kcat 1.7.1 on
// librdkafka 2.0.2) against bootstrap, followed by args.
//
// kcat talks to kfake with no special flags: librdkafka sends ApiVersions v3,
// kfake answers it, and the client picks versions from that answer (MsgVer2,
// idempotent produce, broker group coordinator). We checked -L, -C (by
// partition and with -G), and -P (plain and with enable.idempotence=true).
//
// What breaks is a pre-0.11 protocol: with -X api.version.request=false and
// -X broker.version.fallback=0.9.0, -L lists no topics, -C fails with
// "Disconnected: verify that security.protocol is correctly configured,
// broker might require SASL authentication" and -P hangs. The message is
// misleading: kfake supports only Produce v3+ and Fetch v4+ (message format
// v2, Kafka 0.11) and closes the connection on older requests. So we pin
// api.version.request=true (the default, but older librdkafka releases and
// stray config files can turn it off) and a fallback of 2.8.0, which is only
// used if the ApiVersions request itself fails. -q drops the "% Reached end
// of topic" lines from stderr, so failure output holds only real errors.
func KcatArgs(bootstrap string, args ...string) []string {
	return append([]string{
		"-b", bootstrap,
		"-X", "api.version.request=true",
		"-X", "broker.version.fallback=2.8.0",
		"-q",
	}, args...)
}

// Kcat runs kcat against the cluster with KcatArgs and returns its standard
// output; a missing kcat skips the test locally and fails it in CI. Typical
// uses: Kcat("-L"), Kcat("-C", "-t", topic, "-o", "beginning", "-e", "-f",
// "%k:%s\n").
func (k *Kafka) Kcat(args ...string) string {
	k.t.Helper()
	return RunKcat(k.t, k.Bootstrap(), "", args...)
}

// RunKcat runs kcat against bootstrap with stdin as its input (for -P) and
// returns its standard output, failing the test with kcat's stderr if it
// exits non-zero.
func RunKcat(t testing.TB, bootstrap, stdin string, args ...string) string {
	t.Helper()
	bin := RequireBinary(t, "kcat")
	ctx, cancel := context.WithTimeout(context.Background(), kcatTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, KcatArgs(bootstrap, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr:\n%s\nstdout:\n%s", strings.Join(cmd.Args[1:], " "), err, stderr.String(), stdout.String())
	}
	return stdout.String()
}
