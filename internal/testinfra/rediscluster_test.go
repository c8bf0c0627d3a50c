package testinfra

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The cluster helper end to end: created by redis-cli, reachable through
// its URL with go-redis' cluster client, and a master killed with SIGKILL
// is replaced by its replica, which holds what was written before (WAIT
// made sure it had it), then comes back as a replica.
func TestRedisClusterFailover(t *testing.T) {
	c := StartRedisCluster(t)
	if got := len(c.Masters()); got != 3 {
		t.Fatalf("%d masters, want 3", got)
	}
	if low, err := ephemeralLow(); err == nil {
		for _, n := range c.Nodes {
			if n.port+clusterBusOffset >= low {
				t.Errorf("node on %d: its bus port %d is in the kernel's range (from %d)", n.port, n.port+clusterBusOffset, low)
			}
		}
	}
	if !strings.HasPrefix(c.URL(), "redis+cluster://127.0.0.1:") || strings.Count(c.URL(), "addr=") != 5 {
		t.Fatalf("URL() = %q", c.URL())
	}
	opt, err := redis.ParseClusterURL(strings.Replace(c.URL(), "redis+cluster://", "redis://", 1))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	key := "chat:{failover-user}:k"
	if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	master := c.MasterFor(key)
	m, err := rdb.MasterForKey(ctx, key)
	if err != nil || m.Options().Addr != master.Addr() {
		t.Fatalf("go-redis routes %s to %v (%v), the cluster says %s", key, m, err, master.Addr())
	}
	if n, err := m.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}

	promoted, took := c.KillMaster(master)
	t.Logf("master %s killed; %s promoted after %s", master.Addr(), promoted.Addr(), took.Round(time.Millisecond))
	if promoted == master || c.MasterFor(key) != promoted {
		t.Fatalf("promoted %s, key served by %s", promoted.Addr(), c.MasterFor(key).Addr())
	}
	if took < ClusterNodeTimeout {
		t.Fatalf("promoted after %s, before the node timeout", took)
	}
	if got, err := RedisDo(promoted.Addr(), "GET", key); err != nil || got != "v" {
		t.Fatalf("GET on the promoted replica = %q, %v", got, err)
	}
	c.RestartNode(master)
	if got := len(c.Masters()); got != 3 {
		t.Fatalf("%d masters after the old one rejoined, want 3", got)
	}
	if role, _ := RedisDo(master.Addr(), "ROLE"); !strings.HasPrefix(role, "slave") {
		t.Fatalf("the old master came back as %q, want a replica", role)
	}
}
