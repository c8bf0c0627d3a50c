package history

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/redisbus"
	"github.com/chatrelay/chat/internal/rediskeys"
	"github.com/chatrelay/chat/internal/testinfra"
)

// On a Redis Cluster an append counts (and the relay commits its record)
// only once a replica holds it. A replica that stops taking the
// replication stream, then its master killed before it caught up: the
// append was refused, and the retry lands on the promoted replica — the
// answer is in the history once. Without the wait the master acknowledged
// the append, the relay would have committed, and the promoted replica
// never had it: the answer was gone.
func TestAppendWaitsForAReplicaOnACluster(t *testing.T) {
	cl := testinfra.StartRedisCluster(t)
	rdb, err := redisbus.NewClient(cl.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx := context.Background()
	s := New(rdb, Config{MaxLen: 200, TTL: time.Hour, WaitReplicas: -1, WaitTimeout: 500 * time.Millisecond})
	const user = "durable"
	channel := rediskeys.Live(user)
	sub := rdb.(*redis.ClusterClient).SSubscribe(ctx, channel)
	defer sub.Close()
	if _, err := sub.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatalf("ssubscribe: %v", err)
	}
	appendPublish := func(n int) (string, error) {
		e := answer(user, n)
		return s.AppendPublish(ctx, e, channel, []byte(`{"id":"`+e.ID+`","cursor":"@@"}`), "@@")
	}

	c1, err := appendPublish(1)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || !strings.Contains(msg.Payload, c1) {
		t.Fatalf("published %v, %v; want the payload with cursor %s on the sharded channel", msg, err, c1)
	}

	master := cl.MasterFor(channel)
	replica := cl.ReplicaOf(master)
	if err := syscall.Kill(replica.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(replica.Pid(), syscall.SIGCONT)
		}
	}
	defer resume()
	if _, err := appendPublish(2); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("append with no replica taking it: %v, want ErrNotReplicated (not a success the next failover undoes)", err)
	}
	promoted, _ := cl.KillMaster(master, resume)
	if promoted != replica {
		t.Fatalf("promoted %s, want the paused replica %s", promoted.Addr(), replica.Addr())
	}

	// The promoted master has no replica yet: appends wait for one (the
	// killed node restarts, as an orchestrator restarts it, and comes
	// back as its replica) — the relay retries the record meanwhile.
	deadline := time.Now().Add(5 * time.Second)
	for _, err := appendPublish(2); !errors.Is(err, ErrNotReplicated); _, err = appendPublish(2) {
		// The first tries still go to the dead node, then the slot map
		// is read again.
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("append on the promoted master without a replica: %v, want ErrNotReplicated", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cl.RestartNode(master)
	deadline = time.Now().Add(10 * time.Second)
	for _, err := appendPublish(2); err != nil; _, err = appendPublish(2) {
		if time.Now().After(deadline) {
			t.Fatalf("append after the failover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got, err := s.Since(ctx, user, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if strings.Join(ids, ",") != "r1,r2" {
		t.Fatalf("history after the failover holds %v, want r1,r2 once each", ids)
	}
}
