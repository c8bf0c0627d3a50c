package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/testinfra"
)

// Topics the services create on three brokers with replication factor 3
// get min.insync.replicas=2; with one replica the broker's default stays.
func TestEnsureTopicsMinInsyncReplicas(t *testing.T) {
	k := testinfra.StartKafka(t, testinfra.WithBrokers(3))
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cl, 4, 3, "replicated"); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, cl, 4, 1, "single"); err != nil {
		t.Fatal(err)
	}
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, "replicated", "single")
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]string{"replicated": "2", "single": "1"} {
		rc, err := rcs.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" {
				got = c.MaybeValue()
			}
		}
		if got != want {
			t.Errorf("%s: min.insync.replicas = %q, want %q", topic, got, want)
		}
	}
}
