package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
)

// fakeCluster is the cluster as the sharded pub/sub sees it: which node
// serves each channel, which nodes are up, and a log of the commands each
// connection sent. Nodes answer (s)subscribe commands at once, as Redis
// does; the test moves slots, kills nodes and drops channels.
type fakeCluster struct {
	t *testing.T

	mu     sync.Mutex
	owner  map[string]string // channel → node address; unset: "A"
	down   map[string]bool
	hold   bool // SUNSUBSCRIBE is not confirmed
	conns  []*fakeShardConn
	sent   chan string // "<node> ssubscribe <user>" / "<node> sunsubscribe <user>"
	opened chan *fakeShardConn
}

func newFakeCluster(t *testing.T) *fakeCluster {
	return &fakeCluster{t: t, owner: map[string]string{}, down: map[string]bool{}, sent: make(chan string, 100), opened: make(chan *fakeShardConn, 10)}
}

func (f *fakeCluster) ownerOf(ch string) string {
	if a, ok := f.owner[ch]; ok {
		return a
	}
	return "A"
}

func (f *fakeCluster) Owner(_ context.Context, ch string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ownerOf(ch), nil
}

func (f *fakeCluster) Open() nodePubSub {
	c := &fakeShardConn{f: f, in: make(chan any, 100), closed: make(chan struct{})}
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	return c
}

func (f *fakeCluster) Reload(context.Context) {}

// move makes node serve user's channel.
func (f *fakeCluster) move(user, node string) {
	f.mu.Lock()
	f.owner[UserChannel(user)] = node
	f.mu.Unlock()
}

// kill takes node down: its connections break, new ones are refused.
func (f *fakeCluster) kill(node string) {
	f.mu.Lock()
	f.down[node] = true
	conns := slices.Clone(f.conns)
	f.mu.Unlock()
	for _, c := range conns {
		if c.node() == node {
			c.in <- errors.New("read: connection reset by peer")
		}
	}
}

func (f *fakeCluster) up(node string) {
	f.mu.Lock()
	delete(f.down, node)
	f.mu.Unlock()
}

// conn returns the open connection to node.
func (f *fakeCluster) conn(node string) *fakeShardConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range slices.Backward(f.conns) {
		if c.addr == node && !c.isClosed() {
			return c
		}
	}
	f.t.Fatalf("no open connection to %s", node)
	return nil
}

func (f *fakeCluster) expect(want string) { f.t.Helper(); expectSent(f.t, f.sent, want) }
func (f *fakeCluster) quiet()             { f.t.Helper(); quietOn(f.t, f.sent, 150*time.Millisecond) }

// fakeShardConn is one go-redis sharded PubSub: it connects to the owner of
// the first channel it subscribes.
type fakeShardConn struct {
	f      *fakeCluster
	in     chan any
	closed chan struct{}
	addr   string // set by the first SSubscribe
}

func (c *fakeShardConn) node() string {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.addr
}

func (c *fakeShardConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *fakeShardConn) command(kind string, chs []string) error {
	c.f.mu.Lock()
	if c.addr == "" {
		c.addr = c.f.ownerOf(chs[0])
	}
	addr, down, hold := c.addr, c.f.down[c.addr], c.f.hold
	c.f.mu.Unlock()
	if down {
		return fmt.Errorf("dial %s: connection refused", addr)
	}
	for _, ch := range chs {
		user, _ := UserFromChannel(ch)
		if kind == "ssubscribe" || !hold {
			c.in <- &redis.Subscription{Kind: kind, Channel: ch}
		}
		c.f.sent <- addr + " " + kind + " " + user
	}
	return nil
}

func (c *fakeShardConn) SSubscribe(_ context.Context, chs ...string) error {
	return c.command("ssubscribe", chs)
}

func (c *fakeShardConn) SUnsubscribe(_ context.Context, chs ...string) error {
	return c.command("sunsubscribe", chs)
}

func (c *fakeShardConn) ReceiveTimeout(ctx context.Context, d time.Duration) (any, error) {
	select {
	case m := <-c.in:
		if err, ok := m.(error); ok {
			return nil, err
		}
		return m, nil
	case <-c.closed:
		return nil, redis.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *fakeShardConn) Ping(context.Context, ...string) error { return nil }

func (c *fakeShardConn) Close() error {
	if !c.isClosed() {
		close(c.closed)
	}
	return nil
}

// publish is an SPUBLISH reaching the subscribers on c.
func (c *fakeShardConn) publish(user, id string) {
	b, _ := envelope.Marshal(answer(user, id))
	c.in <- &redis.Message{Channel: UserChannel(user), Payload: string(b)}
}

func startShardedHub(t *testing.T) (*Hub, *fakeCluster) {
	f := newFakeCluster(t)
	ps := newShardedPubSub(f, slog.New(slog.DiscardHandler), shardTiming{readTimeout: time.Minute, retryMin: 10 * time.Millisecond, retryMax: 50 * time.Millisecond})
	h := newHub(ps, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, f
}

func subscribeSharded(t *testing.T, h *Hub, user string, s Sink) func() {
	t.Helper()
	un, err := h.Subscribe(context.Background(), user, s)
	if err != nil {
		t.Fatalf("subscribe %s: %v", user, err)
	}
	return un
}

func TestShardedHub(t *testing.T) {
	t.Run("one connection per node, each channel on its slot's master", func(t *testing.T) {
		h, f := startShardedHub(t)
		f.move("bob", "B")
		a, b, a2 := &orderSink{}, &orderSink{}, &orderSink{}
		subscribeSharded(t, h, "alice", a)
		f.expect("A ssubscribe alice")
		subscribeSharded(t, h, "bob", b)
		f.expect("B ssubscribe bob")
		subscribeSharded(t, h, "carol", a2)
		f.expect("A ssubscribe carol")
		f.mu.Lock()
		n := len(f.conns)
		f.mu.Unlock()
		if n != 2 {
			t.Fatalf("%d connections, want one per node (2)", n)
		}
		f.conn("A").publish("alice", "r1")
		f.conn("B").publish("bob", "r2")
		a.waitFor(t, []string{"r1"})
		b.waitFor(t, []string{"r2"})
	})

	t.Run("a master dies: its channels resubscribe on the promoted replica, then resync before the next message", func(t *testing.T) {
		h, f := startShardedHub(t)
		f.move("bob", "B")
		a, b := &orderSink{}, &orderSink{}
		subscribeSharded(t, h, "alice", a)
		f.expect("A ssubscribe alice")
		subscribeSharded(t, h, "bob", b)
		f.expect("B ssubscribe bob")

		// A dies; until the failover the cluster still names A.
		f.kill("A")
		time.Sleep(100 * time.Millisecond) // a few refused retries
		f.quiet()
		f.move("alice", "A2") // the replica is promoted
		f.expect("A2 ssubscribe alice")
		f.conn("A2").publish("alice", "r1")
		a.waitFor(t, []string{"resync", "r1"})
		f.conn("B").publish("bob", "r2")
		b.waitFor(t, []string{"r2"}) // the other shard saw nothing happen
	})

	t.Run("redis drops a channel whose slot moved: that channel alone moves and resyncs", func(t *testing.T) {
		h, f := startShardedHub(t)
		a, c := &orderSink{}, &orderSink{}
		subscribeSharded(t, h, "alice", a)
		f.expect("A ssubscribe alice")
		subscribeSharded(t, h, "carol", c)
		f.expect("A ssubscribe carol")
		f.move("alice", "B")
		f.conn("A").in <- &redis.Subscription{Kind: "sunsubscribe", Channel: UserChannel("alice")}
		f.expect("B ssubscribe alice")
		f.conn("B").publish("alice", "r1")
		a.waitFor(t, []string{"resync", "r1"})
		f.conn("A").publish("carol", "r2")
		c.waitFor(t, []string{"r2"})
		f.quiet()
	})

	t.Run("the last sink leaves: the confirmation of SUNSUBSCRIBE is not taken for a moved slot", func(t *testing.T) {
		h, f := startShardedHub(t)
		a := &orderSink{}
		un := subscribeSharded(t, h, "alice", a)
		f.expect("A ssubscribe alice")
		un()
		f.expect("A sunsubscribe alice")
		f.quiet() // not subscribed again
		waitUsers(t, h, 0)
		// A new sink subscribes afresh and is not resynced.
		b := &orderSink{}
		subscribeSharded(t, h, "alice", b)
		f.expect("A ssubscribe alice")
		f.conn("A").publish("alice", "r1")
		b.waitFor(t, []string{"r1"})
	})

	t.Run("a sink leaves while its master is down: unsubscribed with no command, nothing subscribed when it returns", func(t *testing.T) {
		h, f := startShardedHub(t)
		un := subscribeSharded(t, h, "alice", &orderSink{})
		f.expect("A ssubscribe alice")
		f.kill("A")
		time.Sleep(50 * time.Millisecond)
		un()
		waitUsers(t, h, 0)
		f.up("A")
		f.quiet()
	})

	t.Run("a master down for many refused retries does not hold up the other shards", func(t *testing.T) {
		h, f := startShardedHub(t)
		f.move("bob", "B")
		b := &orderSink{}
		subscribeSharded(t, h, "alice", &orderSink{})
		f.expect("A ssubscribe alice")
		subscribeSharded(t, h, "bob", b)
		f.expect("B ssubscribe bob")
		f.kill("A")
		time.Sleep(500 * time.Millisecond) // retries every 10-50 ms, each refused
		start := time.Now()
		f.conn("B").publish("bob", "r1")
		b.waitFor(t, []string{"r1"})
		if took := time.Since(start); took > 200*time.Millisecond {
			t.Fatalf("bob's answer took %s while alice's master was down", took)
		}
	})

	t.Run("an SUNSUBSCRIBE waiting on a connection that dies is confirmed", func(t *testing.T) {
		h, f := startShardedHub(t)
		f.mu.Lock()
		f.hold = true
		f.mu.Unlock()
		un := subscribeSharded(t, h, "alice", &orderSink{})
		f.expect("A ssubscribe alice")
		un()
		f.expect("A sunsubscribe alice")
		f.kill("A")
		waitUsers(t, h, 0)
		f.move("alice", "A2")
		b := &orderSink{}
		subscribeSharded(t, h, "alice", b)
		f.expect("A2 ssubscribe alice")
		f.conn("A2").publish("alice", "r1")
		b.waitFor(t, []string{"r1"})
	})

	t.Run("a subscribe while the master is down waits for it", func(t *testing.T) {
		h, f := startShardedHub(t)
		subscribeSharded(t, h, "bob", &orderSink{})
		f.expect("A ssubscribe bob")
		f.kill("A")
		res := subscribeAsync(h, "alice", &orderSink{})
		pending(t, res, "subscribe during the failover")
		f.move("alice", "A2")
		f.move("bob", "A2")
		waitErr(t, res, "subscribe after the failover")
	})
}

func waitUsers(t *testing.T, h *Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Users() != n {
		if time.Now().After(deadline) {
			t.Fatalf("Users() = %d, want %d", h.Users(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
