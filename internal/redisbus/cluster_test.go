package redisbus

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// The hub on a real Redis Cluster: user channels are sharded channels on
// the master of each user's slot (one connection per master it needs), the
// relay's publish reaches them with SPUBLISH, no classic channel is used,
// and a master killed with SIGKILL costs its users one resync each — after
// its replica's promotion they receive again — while the other shards'
// users see nothing happen.
func TestHubOnRedisCluster(t *testing.T) {
	cl := testinfra.StartRedisCluster(t)
	c, err := NewClient(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !Clustered(c) {
		t.Fatal("a redis+cluster:// client must use sharded channels")
	}
	// The relay's client is another process's: the hub's reloads of its
	// own slot map do not help it.
	pub, err := NewClient(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	hub := NewHub(c, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// One user on each master.
	users := map[string]string{} // master address → user
	for i := 0; len(users) < 3 && i < 1000; i++ {
		u := fmt.Sprintf("user%d", i)
		if m := cl.MasterFor(UserChannel(u)).Addr(); users[m] == "" {
			users[m] = u
		}
	}
	sinks := map[string]*sink{}
	for _, u := range users {
		sinks[u] = newSink()
		if _, err := hub.Subscribe(ctx, u, sinks[u]); err != nil {
			t.Fatalf("subscribe %s: %v", u, err)
		}
	}
	for m, u := range users {
		if n, err := testinfra.RedisDo(m, "PUBSUB", "SHARDNUMSUB", UserChannel(u)); err != nil || n != UserChannel(u)+"\n1" {
			t.Fatalf("PUBSUB SHARDNUMSUB on %s's master = %q, %v", u, n, err)
		}
		if n, _ := testinfra.RedisDo(m, "PUBSUB", "CHANNELS"); n != "" {
			t.Fatalf("classic channels subscribed on %s: %q", m, n)
		}
	}
	publishAll := func(id string) {
		t.Helper()
		for _, u := range users {
			// Retried as the relay retries a record. After the failover
			// the client must find the promoted master by itself (it
			// kept dialing the dead one for a minute: go-redis reloads
			// its slot map on MOVED, which a dead node never sends).
			deadline := time.Now().Add(5 * time.Second)
			for err := Publish(ctx, pub, answer(u, id)); err != nil; err = Publish(ctx, pub, answer(u, id)) {
				if time.Now().After(deadline) {
					t.Fatalf("publish to %s: %v", u, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if got := sinks[u].wait(t, 1); got[len(got)-1].ID != id {
				t.Fatalf("%s got %s, want %s", u, got[len(got)-1].ID, id)
			}
		}
	}
	publishAll("r1")

	var victim string
	for m := range users {
		victim = m
		break
	}
	promoted, took := cl.KillMaster(cl.Node(victim))
	t.Logf("killed %s, %s promoted after %s", victim, promoted.Addr(), took.Round(time.Millisecond))
	// The hub subscribes the victim's user again within its retry bound
	// (2 s) of the promotion.
	u := users[victim]
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := testinfra.RedisDo(promoted.Addr(), "PUBSUB", "SHARDNUMSUB", UserChannel(u))
		if err == nil && n == UserChannel(u)+"\n1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not subscribed on the promoted master: %q, %v", u, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	publishAll("r2")
	for m, u := range users {
		sinks[u].mu.Lock()
		resyncs := sinks[u].resyncs
		sinks[u].mu.Unlock()
		if want := map[bool]int{true: 1, false: 0}[m == victim]; resyncs != want {
			t.Errorf("%s (master %s) resynced %d times, want %d", u, m, resyncs, want)
		}
	}
}
