package grouplag

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const topic = "incoming_messages"

// cluster is a kfake broker with topic's three partitions seeded and n
// records produced to each partition.
func cluster(t testing.TB, perPartition ...int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(len(perPartition)), topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl := client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))
	for p, n := range perPartition {
		for range n {
			produce(t, cl, int32(p))
		}
	}
	return c
}

func client(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t testing.TB, cl *kgo.Client, partition int32) {
	t.Helper()
	r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte("m")}
	if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// commit sets group's committed offset on partition, as a consumer would.
func commit(t testing.TB, c *kfake.Cluster, group string, partition int32, at int64) {
	t.Helper()
	o := kadm.Offsets{}
	o.AddOffset(topic, partition, at, -1)
	if err := kadm.NewClient(client(t, c)).CommitAllOffsets(context.Background(), group, o); err != nil {
		t.Fatal(err)
	}
}

// exporter is an exporter on c for targets, with its own registry.
func exporter(t testing.TB, c *kfake.Cluster, interval time.Duration, targets ...Target) (*Exporter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	return newExporter(client(t, c), targets, interval, log, reg), reg
}

// values is every sample of reg as `name{k="v",…}` → value.
func values(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func lagKey(group string, partition int) string {
	return fmt.Sprintf(`chat_kafka_group_lag{group=%q,partition="%d",topic=%q}`, group, partition, topic)
}

func expect(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (exported: %v), want %v", k, g, ok, v)
		}
	}
}

// With no consumer alive, the lag is still measured: committed partitions
// from their commit, a never-committed partition from its log start, a group
// the broker never saw from the start of every partition.
func TestLagWithoutAnyConsumer(t *testing.T) {
	c := cluster(t, 5, 3, 0)
	commit(t, c, "ai-consumer", 0, 2)
	e, reg := exporter(t, c, time.Second, Target{"ai-consumer", topic}, Target{"never-joined", topic})
	e.Measure(context.Background())
	expect(t, values(t, reg), map[string]float64{
		lagKey("ai-consumer", 0): 3, lagKey("ai-consumer", 1): 3, lagKey("ai-consumer", 2): 0,
		lagKey("never-joined", 0): 5, lagKey("never-joined", 1): 3, lagKey("never-joined", 2): 0,
		`chat_kafka_group_members{group="ai-consumer"}`:             0,
		`chat_kafka_group_members{group="never-joined"}`:            0,
		`chat_kafka_group_state{group="ai-consumer",state="Empty"}`: 1,
		`chat_kafka_group_state{group="never-joined",state="Dead"}`: 1,
		`chat_kafka_group_lag_errors_total{group="ai-consumer"}`:    0,
	})
}

// A live member is counted; when it leaves, the count drops to 0 while the
// lag of what arrives afterwards keeps growing.
func TestMembersComeAndGo(t *testing.T) {
	c := cluster(t, 1, 1, 1)
	consumer := client(t, c, kgo.ConsumerGroup("ai-consumer"), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for seen := 0; seen < 3; {
		fs := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumer got %d of 3 records: %v", seen, err)
		}
		seen += fs.NumRecords()
	}
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	e, reg := exporter(t, c, time.Second, Target{"ai-consumer", topic})
	e.Measure(ctx)
	expect(t, values(t, reg), map[string]float64{
		`chat_kafka_group_members{group="ai-consumer"}`:              1,
		`chat_kafka_group_state{group="ai-consumer",state="Stable"}`: 1,
		lagKey("ai-consumer", 0):                                     0,
	})

	consumer.Close() // leaves the group
	producer := client(t, c, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, producer, 0)
	produce(t, producer, 0)
	e.Measure(ctx)
	expect(t, values(t, reg), map[string]float64{
		`chat_kafka_group_members{group="ai-consumer"}`:             0,
		`chat_kafka_group_state{group="ai-consumer",state="Empty"}`: 1,
		lagKey("ai-consumer", 0):                                    2,
	})
}

// A broker that stops answering is counted; the last values stay for
// staleRounds intervals, then the group's series go (its error count stays).
func TestBrokerGoneKeepsThenDrops(t *testing.T) {
	c := cluster(t, 2)
	// The interval bounds each round: a first round (a fresh client's
	// connection and five requests) under -race on a busy machine took
	// more than 100 ms and failed, so it is seconds here; the round after
	// the broker went waits out this much.
	interval := 2 * time.Second
	e, reg := exporter(t, c, interval, Target{"ai-consumer", topic})
	e.Measure(context.Background())
	if got := values(t, reg)[lagKey("ai-consumer", 0)]; got != 2 {
		t.Fatalf("lag before the broker went: %v, want 2", got)
	}
	c.Close()
	e.Measure(context.Background())
	got := values(t, reg)
	expect(t, got, map[string]float64{lagKey("ai-consumer", 0): 2, `chat_kafka_group_lag_errors_total{group="ai-consumer"}`: 1})

	e.publish(map[string]*view{"ai-consumer": {err: errors.New("still down")}}, time.Now().Add((staleRounds+1)*interval))
	got = values(t, reg)
	for k := range got {
		if !strings.HasPrefix(k, "chat_kafka_group_lag_errors_total") {
			t.Errorf("%s still exported after %d intervals without an answer", k, staleRounds)
		}
	}
	expect(t, got, map[string]float64{`chat_kafka_group_lag_errors_total{group="ai-consumer"}`: 2})
}

// Run measures at once and then on its interval, and returns when ctx ends.
func TestRunMeasuresOnItsInterval(t *testing.T) {
	c := cluster(t, 1)
	e, reg := exporter(t, c, 50*time.Millisecond, Target{"ai-consumer", topic})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	producer := client(t, c, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, producer, 0)
	deadline := time.Now().Add(10 * time.Second)
	for values(t, reg)[lagKey("ai-consumer", 0)] != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("lag never reached 2: %v", values(t, reg))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// requestCounter counts the requests a client writes, by API.
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.n[kmsg.NameForKey(key)]++
	}
}

func (r *requestCounter) take() (map[string]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out, total := r.n, 0
	for _, n := range out {
		total += n
	}
	r.n = map[string]int{}
	return out, total
}

// The cost of one round in steady state (both groups committed): the
// requests it sends. docs/observability.md quotes this.
func TestRequestsPerRound(t *testing.T) {
	c := cluster(t, 3, 3, 3)
	for _, g := range []string{"ai-consumer", "message-relay"} {
		for p := range int32(3) {
			commit(t, c, g, p, 1)
		}
	}
	counter := &requestCounter{n: map[string]int{}}
	reg := prometheus.NewRegistry()
	e := newExporter(client(t, c, kgo.WithHooks(counter)), []Target{{"ai-consumer", topic}, {"message-relay", topic}},
		time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	e.Measure(context.Background()) // connects, finds the coordinator
	counter.take()
	e.Measure(context.Background())
	byAPI, total := counter.take()
	t.Logf("requests in a steady-state round: %d %v", total, byAPI)
	if total > 5 || byAPI["ListOffsets"] != 1 || byAPI["OffsetFetch"] != 1 || byAPI["DescribeGroups"] != 1 {
		t.Errorf("a round sent %d requests %v; want Metadata, one ListOffsets, one OffsetFetch, one DescribeGroups", total, byAPI)
	}
}

// BenchmarkMeasure is the CPU of one round against an in-process broker
// (the broker's own work included, so an upper bound for the exporter).
func BenchmarkMeasure(b *testing.B) {
	c := cluster(b, make([]int, 12)...)
	for _, g := range []string{"ai-consumer", "message-relay"} {
		for p := range int32(12) {
			commit(b, c, g, p, 0)
		}
	}
	e, _ := exporter(b, c, time.Second, Target{"ai-consumer", topic}, Target{"message-relay", topic})
	ctx := context.Background()
	e.Measure(ctx)
	b.ReportAllocs()
	for b.Loop() {
		e.Measure(ctx)
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Target
		err  string
	}{
		{in: "ai-consumer=incoming_messages, message-relay=responses",
			want: []Target{{"ai-consumer", "incoming_messages"}, {"message-relay", "responses"}}},
		{in: "g=a,g=b,g=a", want: []Target{{"g", "a"}, {"g", "b"}}},
		{in: "odd=group=t", want: []Target{{"odd=group", "t"}}},
		{in: "no-topic", err: "is not group=topic"},
		{in: "=t", err: "is not group=topic"},
		{in: "g=bad topic", err: "the topic must be"},
		{in: " , ", err: "names no group"},
		{in: manyTargets(maxTargets + 1), err: "at most"},
	} {
		got, err := Config{Groups: tc.in}.Targets()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "KAFKA_LAG_GROUPS: ") {
				t.Errorf("%q: error %v, want one naming KAFKA_LAG_GROUPS with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func manyTargets(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprintf("g%d=t", i))
	}
	return strings.Join(parts, ",")
}

func TestConfigValidate(t *testing.T) {
	off := Config{Interval: 0, Groups: "not valid"}
	if err := off.Validate(); err != nil || off.Enabled() {
		t.Errorf("an exporter turned off is not checked further: %v, enabled %v", err, off.Enabled())
	}
	for _, c := range []Config{{Interval: -time.Second}, {Interval: time.Millisecond, Groups: "g=t"}} {
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "KAFKA_LAG_INTERVAL: ") {
			t.Errorf("%+v: %v, want a KAFKA_LAG_INTERVAL error", c, err)
		}
	}
}

func TestCovers(t *testing.T) {
	c := Config{Interval: time.Second, Groups: "ai-consumer=incoming_messages,message-relay=responses"}
	if err := c.Covers(Target{"ai-consumer", "incoming_messages"}, Target{"message-relay", "responses"}); err != nil {
		t.Errorf("the default covers the default groups: %v", err)
	}
	if err := c.Covers(Target{"renamed", "incoming_messages"}); err == nil || !strings.Contains(err.Error(), "renamed=incoming_messages") {
		t.Errorf("a renamed group is not measured: want an error naming it, got %v", err)
	}
	if err := (Config{Groups: "x=y"}).Covers(Target{"renamed", "incoming_messages"}); err != nil {
		t.Errorf("an exporter turned off covers nothing and needs nothing: %v", err)
	}
}
