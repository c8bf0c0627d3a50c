package testinfra

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func kafkaCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func kafkaClient(t *testing.T, bootstrap []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(bootstrap...)}, opts...)...)
	if err != nil {
		t.Fatalf("kgo client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func kafkaProduce(t *testing.T, ctx context.Context, cl *kgo.Client, topic string, kvs ...string) {
	t.Helper()
	var recs []*kgo.Record
	for i := 0; i+1 < len(kvs); i += 2 {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(kvs[i]), Value: []byte(kvs[i+1])})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// consumeN polls until n records arrived and returns them as "key:value".
func kafkaConsumeN(t *testing.T, ctx context.Context, cl *kgo.Client, n int) ([]string, []*kgo.Record) {
	t.Helper()
	var got []string
	var recs []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before timeout: %v", len(got), n, got)
		}
		for _, e := range fs.Errors() {
			if rejoins(e.Err) {
				t.Logf("fetch %s/%d: %v (the client joins again by itself)", e.Topic, e.Partition, e.Err)
				continue
			}
			t.Fatalf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got = append(got, string(r.Key)+":"+string(r.Value))
			recs = append(recs, r)
		})
	}
	return got, recs
}

// rejoins reports whether a fetch error is the group session's, which the
// client recovers from by itself (it finds the group's coordinator again
// and rejoins), as the services' consumers treat every fetch error: after a
// broker is killed, a heartbeat or join may still dial the dead
// coordinator before the client learns the new one (TestKafkaKillBroker
// failed so, once in a busy `make test`).
func rejoins(err error) bool {
	var gs *kgo.ErrGroupSession
	return errors.As(err, &gs)
}

func TestRejoinsOnlyOnGroupSessionErrors(t *testing.T) {
	dial := errors.New("unable to dial: dial tcp 127.0.0.1:1: connect: connection refused")
	if !rejoins(&kgo.ErrGroupSession{Err: dial}) || !rejoins(fmt.Errorf("poll: %w", &kgo.ErrGroupSession{Err: dial})) {
		t.Error("a group session error is fatal to the test's consumer")
	}
	if rejoins(dial) || rejoins(kerr.UnknownTopicOrPartition) {
		t.Error("an error outside the group session is passed over")
	}
}

func TestKafkaProduceConsume(t *testing.T) {
	k := StartKafka(t, WithPartitions(3), WithTopics("chat"))
	ctx := kafkaCtx(t)
	if len(k.Addrs()) != 1 || k.Bootstrap() != k.Addrs()[0] {
		t.Fatalf("Addrs() = %v, Bootstrap() = %q; want one broker", k.Addrs(), k.Bootstrap())
	}

	prod := kafkaClient(t, k.Addrs())
	kafkaProduce(t, ctx, prod, "chat", "u1", "hello", "u2", "hi")

	cons := kafkaClient(t, k.Addrs(), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("chat"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got, _ := kafkaConsumeN(t, ctx, cons, 2)
	slices.Sort(got)
	if want := []string{"u1:hello", "u2:hi"}; !slices.Equal(got, want) {
		t.Fatalf("consumed %v, want %v", got, want)
	}

	if n := len(k.Cluster().PartitionInfos("chat")); n != 3 {
		t.Fatalf("topic chat has %d partitions, want 3", n)
	}
}

func TestKafkaRestart(t *testing.T) {
	const topic, group = "incoming", "ai-consumer"
	tests := []struct {
		name        string
		opts        []KafkaOption
		wantRecords bool
	}{
		{"data dir keeps records and offsets", []KafkaOption{WithPartitions(1), WithDataDir()}, true},
		{"no data dir starts empty", []KafkaOption{WithPartitions(1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := StartKafka(t, tt.opts...)
			ctx := kafkaCtx(t)
			addrs := k.Addrs()

			prod := kafkaClient(t, addrs, kgo.AllowAutoTopicCreation())
			kafkaProduce(t, ctx, prod, topic, "a", "1", "b", "2", "c", "3")

			// Consume everything but commit only the first two records,
			// as a consumer that crashed while handling the third would.
			cons := kafkaClient(t, addrs, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
			_, recs := kafkaConsumeN(t, ctx, cons, 3)
			if err := cons.CommitRecords(ctx, recs[:2]...); err != nil {
				t.Fatalf("commit: %v", err)
			}
			cons.Close()

			k.Restart()
			if !slices.Equal(k.Addrs(), addrs) {
				t.Fatalf("addresses changed across restart: %v -> %v", addrs, k.Addrs())
			}

			adm := kadm.NewClient(kafkaClient(t, addrs))
			offsets, err := adm.FetchOffsets(ctx, group)
			if !tt.wantRecords && errors.Is(err, kerr.GroupIDNotFound) {
				err = nil // the group is gone with the rest of the state
			}
			if err != nil {
				t.Fatalf("fetch offsets: %v", err)
			}
			o, ok := offsets.Lookup(topic, 0)
			switch {
			case tt.wantRecords && (!ok || o.At != 2):
				t.Fatalf("committed offset after restart = %+v (found %v), want 2", o, ok)
			case !tt.wantRecords && ok && o.At >= 0:
				t.Fatalf("committed offset survived a restart without data dir: %+v", o)
			}

			if !tt.wantRecords {
				topics, err := adm.ListTopics(ctx)
				if err != nil {
					t.Fatalf("list topics: %v", err)
				}
				if topics.Has(topic) {
					t.Fatalf("topic %s survived a restart without data dir", topic)
				}
				return
			}

			// The group resumes at the committed offset: only "c" again.
			again := kafkaClient(t, addrs, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			got, _ := kafkaConsumeN(t, ctx, again, 1)
			if want := []string{"c:3"}; !slices.Equal(got, want) {
				t.Fatalf("group resumed with %v, want %v", got, want)
			}
			// And the log still holds everything from the start.
			all := kafkaClient(t, addrs, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			got, _ = kafkaConsumeN(t, ctx, all, 3)
			if want := []string{"a:1", "b:2", "c:3"}; !slices.Equal(got, want) {
				t.Fatalf("log after restart = %v, want %v", got, want)
			}
		})
	}
}

// A client built before an outage must keep working after the broker comes
// back on the same address, without being recreated: that is what the
// services rely on.
func TestKafkaClientSurvivesRestart(t *testing.T) {
	k := StartKafka(t, WithPartitions(1), WithDataDir())
	ctx := kafkaCtx(t)
	prod := kafkaClient(t, k.Addrs(), kgo.AllowAutoTopicCreation())
	kafkaProduce(t, ctx, prod, "t", "k", "before")

	k.Stop()
	if k.Running() || k.Cluster() != nil {
		t.Fatal("cluster still reported running after Stop")
	}
	if c, err := net.DialTimeout("tcp", k.Addrs()[0], time.Second); err == nil {
		c.Close()
		t.Fatal("broker port accepts connections while stopped")
	}
	k.Start()

	kafkaProduce(t, ctx, prod, "t", "k", "after")
	cons := kafkaClient(t, k.Addrs(), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got, _ := kafkaConsumeN(t, ctx, cons, 2)
	if want := []string{"k:before", "k:after"}; !slices.Equal(got, want) {
		t.Fatalf("consumed %v, want %v", got, want)
	}
}

func TestKafkaBrokers(t *testing.T) {
	k := StartKafka(t, WithBrokers(3), WithPartitions(6))
	ctx := kafkaCtx(t)
	if n := len(k.Addrs()); n != 3 {
		t.Fatalf("Addrs() has %d brokers, want 3", n)
	}
	if got := strings.Split(k.Bootstrap(), ","); !slices.Equal(got, k.Addrs()) {
		t.Fatalf("Bootstrap() = %q, want %v joined", k.Bootstrap(), k.Addrs())
	}
	adm := kadm.NewClient(kafkaClient(t, k.Addrs()[:1]))
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	if len(md.Brokers) != 3 {
		t.Fatalf("metadata lists %d brokers, want 3", len(md.Brokers))
	}
}

// A broker killed out of three: its connections are cut and refused, no
// partition is led by it any more, and a producer and a consumer group
// carry on through the others — every record once — and it comes back.
func TestKafkaKillBroker(t *testing.T) {
	k := StartKafka(t, WithBrokers(3), WithPartitions(6))
	ctx := kafkaCtx(t)
	adm := kadm.NewClient(kafkaClient(t, k.Addrs()))
	if _, err := adm.CreateTopic(ctx, 6, 3, nil, "chat"); err != nil {
		t.Fatal(err)
	}
	prod := kafkaClient(t, k.Addrs())
	cons := kafkaClient(t, k.Addrs(), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("chat"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var kvs []string
	for i := range 20 {
		kvs = append(kvs, "u"+strconv.Itoa(i), "before")
	}
	kafkaProduce(t, ctx, prod, "chat", kvs...)
	kafkaConsumeN(t, ctx, cons, 20)

	victim := k.Cluster().CoordinatorFor("g")
	k.KillBroker(victim)
	if _, err := net.DialTimeout("tcp", k.Addrs()[victim], time.Second); err == nil {
		t.Fatal("the killed broker still accepts connections")
	}
	for p := range int32(6) {
		if l := k.Cluster().LeaderFor("chat", p); l == victim {
			t.Fatalf("partition %d still led by the killed broker %d", p, victim)
		}
	}
	for i := range kvs {
		if i%2 == 1 {
			kvs[i] = "after"
		}
	}
	kafkaProduce(t, ctx, prod, "chat", kvs...)
	got, _ := kafkaConsumeN(t, ctx, cons, 20)
	for _, kv := range got {
		if !strings.HasSuffix(kv, ":after") {
			t.Fatalf("consumed %q again after the broker's death", kv)
		}
	}
	k.RestartBroker(victim)
	if _, err := net.DialTimeout("tcp", k.Addrs()[victim], time.Second); err != nil {
		t.Fatalf("the restarted broker: %v", err)
	}
}

func TestKcatArgs(t *testing.T) {
	got := KcatArgs("h:1", "-L")
	if got[0] != "-b" || got[1] != "h:1" || got[len(got)-1] != "-L" {
		t.Fatalf("KcatArgs = %v", got)
	}
	if !slices.Contains(got, "api.version.request=true") {
		t.Fatalf("KcatArgs does not pin api.version.request: %v", got)
	}
}

// kcat is what people reach for when debugging a broker by hand and what the
// scripts use; it has to work against kfake.
func TestKcat(t *testing.T) {
	RequireBinary(t, "kcat")
	k := StartKafka(t, WithPartitions(2))
	ctx := kafkaCtx(t)
	prod := kafkaClient(t, k.Addrs(), kgo.AllowAutoTopicCreation())
	kafkaProduce(t, ctx, prod, "from-kgo", "user-1", "hello", "user-2", "world")

	t.Run("metadata", func(t *testing.T) {
		out := k.Kcat("-L")
		for _, want := range []string{"broker 0 at " + k.Addrs()[0], `topic "from-kgo" with 2 partitions`} {
			if !strings.Contains(out, want) {
				t.Errorf("kcat -L output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("consume with keys", func(t *testing.T) {
		out := k.Kcat("-C", "-t", "from-kgo", "-o", "beginning", "-e", "-f", "%k:%s\n")
		got := strings.Fields(out)
		slices.Sort(got)
		if want := []string{"user-1:hello", "user-2:world"}; !slices.Equal(got, want) {
			t.Fatalf("kcat consumed %v, want %v", got, want)
		}
	})
	t.Run("consume as group", func(t *testing.T) {
		out := k.Kcat("-G", "kcat-group", "-o", "beginning", "-e", "-f", "%k:%s\n", "from-kgo")
		if got := strings.Fields(out); len(got) != 2 {
			t.Fatalf("kcat -G consumed %v, want 2 records", got)
		}
	})
	t.Run("produce with keys", func(t *testing.T) {
		RunKcat(t, k.Bootstrap(), "a:1\nb:2\n", "-P", "-t", "from-kcat", "-K:")
		cons := kafkaClient(t, k.Addrs(), kgo.ConsumeTopics("from-kcat"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		got, _ := kafkaConsumeN(t, ctx, cons, 2)
		slices.Sort(got)
		if want := []string{"a:1", "b:2"}; !slices.Equal(got, want) {
			t.Fatalf("kgo consumed %v from kcat, want %v", got, want)
		}
	})
}

func TestRunKafka(t *testing.T) {
	addr := FreeAddr(t)
	dir := t.TempDir()
	run := func() (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- RunKafka(ctx, addr, 1, dir) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return cancel, done
			}
			select {
			case err := <-done:
				cancel()
				t.Fatalf("RunKafka returned early: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("RunKafka did not listen on %s: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("RunKafka: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("RunKafka did not return after cancel")
		}
	}

	ctx := kafkaCtx(t)
	cancel, done := run()
	prod := kafkaClient(t, []string{addr}, kgo.AllowAutoTopicCreation())
	kafkaProduce(t, ctx, prod, "standalone", "k", "v")
	stop(cancel, done)

	cancel, done = run()
	defer stop(cancel, done)
	cons := kafkaClient(t, []string{addr}, kgo.ConsumeTopics("standalone"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got, _ := kafkaConsumeN(t, ctx, cons, 1)
	if want := []string{"k:v"}; !slices.Equal(got, want) {
		t.Fatalf("after restart consumed %v, want %v", got, want)
	}
}

func TestRunKafkaServerAdvertise(t *testing.T) {
	port := FreePort(t)
	listen := net.JoinHostPort("0.0.0.0", strconv.Itoa(port))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunKafkaServer(ctx, KafkaServerConfig{Listen: listen, Advertise: "localhost:" + strconv.Itoa(port), Topics: []string{"seeded"}})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunKafkaServer: %v", err)
		}
	}()

	adm := kadm.NewClient(kafkaClient(t, []string{"127.0.0.1:" + strconv.Itoa(port)}))
	tctx := kafkaCtx(t)
	var md kadm.Metadata
	var err error
	for {
		md, err = adm.Metadata(tctx)
		if err == nil || tctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	b := md.Brokers[0]
	if b.Host != "localhost" || int(b.Port) != port {
		t.Fatalf("advertised %s:%d, want localhost:%d", b.Host, b.Port, port)
	}
	if !md.Topics.Has("seeded") {
		t.Fatalf("topic seeded missing from %v", md.Topics.Names())
	}
}

func TestKafkaAdvertised(t *testing.T) {
	tests := []struct {
		listen, advertise, want string
		wantErr                 bool
	}{
		{listen: "127.0.0.1:9092", want: "127.0.0.1:9092"},
		{listen: "0.0.0.0:9092", want: "127.0.0.1:9092"},
		{listen: ":9092", want: "127.0.0.1:9092"},
		{listen: "[::]:9092", want: "127.0.0.1:9092"},
		{listen: "0.0.0.0:9092", advertise: "kafka:9092", want: "kafka:9092"},
		{listen: "0.0.0.0:0", wantErr: true},
		{listen: "nonsense", wantErr: true},
		{listen: ":9092", advertise: "kafka", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.listen+"|"+tt.advertise, func(t *testing.T) {
			got, err := kafkaAdvertised(tt.listen, tt.advertise)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("kafkaAdvertised(%q, %q) = %q, %v; want %q, err %v", tt.listen, tt.advertise, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRunKafkaBadAddr(t *testing.T) {
	err := RunKafka(context.Background(), "not-an-address", 1, "")
	if err == nil {
		t.Fatal("RunKafka accepted a bad address")
	}
	var ae *net.AddrError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v does not wrap the address error", err)
	}
}
