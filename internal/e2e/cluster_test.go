package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/rediskeys"
	"github.com/chatrelay/chat/internal/testinfra"
)

// The services on a real Redis Cluster (3 masters + 3 replicas) through
// REDIS_URL=redis+cluster://…, where user channels are sharded channels. A
// representative part of the suite runs here, not all of it (a cluster
// costs seconds to form and every test would double): the pipeline, history
// and resume, the ready cursor of a dying socket, and two gateways sharing
// one user across a master's failover. The fault suite adds the failover
// under load (faults_test.go). One cluster serves the subtests in turn,
// emptied between them.
func TestOnRedisCluster(t *testing.T) {
	c := testinfra.StartRedisCluster(t)
	on := func(t *testing.T, gateways int) *stack {
		t.Helper()
		c.FlushAll()
		return startStackOn(t, &stack{Cluster: c, RedisURL: c.URL()}, nil, gateways)
	}
	t.Run("pipeline", func(t *testing.T) { testPipeline(t, on(t, 1)) })
	t.Run("history and resume", func(t *testing.T) { testHistoryAndResume(t, on(t, 1)) })
	t.Run("ready cursor recovers an answer written into a dying socket", func(t *testing.T) { testReadyCursorRecovers(t, on(t, 1)) })
	// Last: it leaves the cluster with a master replaced.
	t.Run("two gateways share a user across a master failover", func(t *testing.T) { testSharedUserAcrossFailover(t, c, on(t, 2)) })
}

// testSharedUserAcrossFailover: one user with a socket on each of two
// gateways, each gateway sharded-subscribed on the user's master; that
// master is killed (kill -9) while an answer is on its way. After the
// replica's promotion both gateways resubscribe there and resync, and
// every answer reaches both sockets exactly once.
func testSharedUserAcrossFailover(t *testing.T, c *testinfra.RedisCluster, s *stack) {
	const user = "dora"
	ch := rediskeys.Live(user)
	s1 := readyClient(t, testinfra.ChatURL(s.WSBases[0], testSecret, user), user)
	s2 := readyClient(t, testinfra.ChatURL(s.WSBases[1], testSecret, user), user)
	master := c.MasterFor(ch)
	if n, err := testinfra.RedisDo(master.Addr(), "PUBSUB", "SHARDNUMSUB", ch); err != nil || n != ch+"\n2" {
		t.Fatalf("PUBSUB SHARDNUMSUB %s on the user's master = %q, %v; want both gateways", ch, n, err)
	}
	for _, m := range c.Masters() {
		if n, _ := testinfra.RedisDo(m.Addr(), "PUBSUB", "CHANNELS"); n != "" {
			t.Fatalf("classic channels on %s: %q", m.Addr(), n)
		}
	}
	got := &answers{ids: map[string][]string{}}
	acks := make(chan string, 100)
	go got.collect(s1, "s1", acks)
	go got.collect(s2, "s2", nil)
	var sent []string
	send := sendAcked(t, s1, acks, &sent)
	for i := range 3 {
		send(fmt.Sprintf("before %d", i))
	}
	got.waitAnswers(t, "s1", sent)
	got.waitAnswers(t, "s2", sent)

	// The answer to this one is written while the master is down.
	s.OpenAI.SetLatency(2 * time.Second)
	send("during")
	promoted, took := c.KillMaster(master)
	s.OpenAI.SetLatency(0)
	t.Logf("master %s killed, %s promoted after %s", master.Addr(), promoted.Addr(), took.Round(time.Millisecond))
	// Restarted, as an orchestrator restarts it: back as the promoted
	// master's replica. Until a replica is there the user's answers wait
	// (the relay stores an answer once a replica holds it).
	c.RestartNode(master)
	for i := range 3 {
		send(fmt.Sprintf("after %d", i))
	}
	got.waitAnswers(t, "s1", sent)
	got.waitAnswers(t, "s2", sent)
	// Both gateways are subscribed in the user's shard: on the promoted
	// master, or on the restarted node, now its replica — a gateway that
	// resubscribed from a slot map not yet updated reaches the node at
	// the old address, which is back as the shard's replica, and Redis
	// passes the shard's SPUBLISH on to its replicas' subscribers.
	subs := 0
	for _, n := range []*testinfra.Redis{promoted, master} {
		out, err := testinfra.RedisDo(n.Addr(), "PUBSUB", "SHARDNUMSUB", ch)
		var k int
		if _, scanErr := fmt.Sscanf(strings.TrimPrefix(out, ch+"\n"), "%d", &k); err != nil || scanErr != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB %s on %s = %q, %v", ch, n.Addr(), out, err)
		}
		subs += k
	}
	if subs != 2 {
		t.Fatalf("%d subscriptions to %s in the user's shard, want both gateways'", subs, ch)
	}
}
