package testinfra

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ClusterNodeTimeout is the cluster-node-timeout the test clusters run with:
// how long a master may be unreachable before its replica takes over. 5 s is
// a value production configurations use too (the server's default is 15 s;
// managed services and operators commonly run 5 s): a failover then takes
// about 6-7 s (the timeout, the FAIL vote, the replica's election delay), so
// the fault suite's drain waits no longer than it does for any other fault.
// It is not lowered below what a production cluster would accept: a test
// that passed only because failover took 1 s would promise nothing.
const ClusterNodeTimeout = 5 * time.Second

// clusterFormTimeout bounds cluster creation and a failover's promotion.
const clusterFormTimeout = 60 * time.Second

// RedisCluster is a Redis Cluster of real redis-server processes on loopback
// owned by one test: three masters, each with one replica, made with
// redis-cli --cluster create as an operator would. Every node is a *Redis,
// so it can be killed and restarted on its port and directory; a restarted
// node reads its nodes.conf and rejoins the cluster (a killed master comes
// back as a replica of the node that replaced it).
//
// Methods report failures with t.Fatal: call them from the test's own
// goroutine.
type RedisCluster struct {
	t     testing.TB
	Nodes []*Redis
}

// StartRedisCluster starts six cluster-enabled redis-servers on free
// loopback ports, joins them as 3 masters + 3 replicas and waits until every
// node reports cluster_state:ok with all 16384 slots served. opts apply to
// every node (WithPersistence, WithRedisArgs). t.Cleanup stops the nodes.
func StartRedisCluster(t testing.TB, opts ...RedisOption) *RedisCluster {
	t.Helper()
	cli := RequireBinary(t, "redis-cli")
	c := &RedisCluster{t: t}
	for range 6 {
		nodeOpts := append([]RedisOption{withClusterBus(), WithRedisArgs(
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout.Milliseconds())),
			// A replica's full sync starts at once instead of after the
			// default 5 s wait for more replicas to share the transfer:
			// with one replica per master there is nothing to wait for
			// (a production value as well).
			"--repl-diskless-sync-delay", "0",
		)}, opts...)
		c.Nodes = append(c.Nodes, StartRedis(t, nodeOpts...))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterFormTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.WaitHealthy()
	return c
}

// Addrs returns every node's host:port.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns the redis+cluster:// URL the services take as REDIS_URL: the
// first node, and every other one as a further seed.
func (c *RedisCluster) URL() string {
	addrs := c.Addrs()
	u := "redis+cluster://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// Node returns the node listening on addr, or nil.
func (c *RedisCluster) Node(addr string) *Redis {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, masterID string
	flags              string
	master, failed     bool
	slots              bool     // serves at least one slot
	ranges             [][2]int // the slots it serves
}

// nodes reads CLUSTER NODES from a running node.
func (c *RedisCluster) nodes() ([]clusterNode, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		nodes, err := nodesSeenBy(n.Addr())
		if err != nil {
			lastErr = err
			continue
		}
		return nodes, nil
	}
	return nil, fmt.Errorf("no running node answered CLUSTER NODES: %w", lastErr)
}

// nodesSeenBy reads CLUSTER NODES from the node at addr: its view of the
// cluster, which gossip brings in line with the others' within moments.
func nodesSeenBy(addr string) ([]clusterNode, error) {
	out, err := RedisDo(addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := f[2]
		cn := clusterNode{
			id: f[0], addr: addr, masterID: f[3], flags: flags,
			master: strings.Contains(flags, "master"),
			failed: strings.Contains(flags, "fail") && !strings.Contains(flags, "fail?"),
			slots:  len(f) > 8,
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated or imported
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				cn.ranges = append(cn.ranges, [2]int{a, b})
			}
		}
		nodes = append(nodes, cn)
	}
	return nodes, nil
}

// Masters returns the nodes that serve slots now.
func (c *RedisCluster) Masters() []*Redis {
	c.t.Helper()
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	var out []*Redis
	for _, n := range nodes {
		if n.master && n.slots && !n.failed {
			out = append(out, c.Node(n.addr))
		}
	}
	return out
}

// MasterFor returns the node that serves key's slot now.
func (c *RedisCluster) MasterFor(key string) *Redis {
	c.t.Helper()
	var slot int
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		out, err := RedisDo(n.Addr(), "CLUSTER", "KEYSLOT", key)
		if err != nil {
			c.t.Fatalf("CLUSTER KEYSLOT: %v", err)
		}
		slot, _ = strconv.Atoi(out)
		break
	}
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range nodes {
		for _, r := range n.ranges {
			if n.master && !n.failed && r[0] <= slot && slot <= r[1] {
				return c.Node(n.addr)
			}
		}
	}
	c.t.Fatalf("no master serves %q (slot %d)", key, slot)
	return nil
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// agrees on the cluster: all 16384 slots served, every running node known
// and connected, and every master with a replica whose link is up.
func (c *RedisCluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(clusterFormTimeout)
	var problem error
	for time.Now().Before(deadline) {
		if problem = c.healthy(); problem == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("redis cluster not healthy after %v: %v\n%s", clusterFormTimeout, problem, c.logTails())
}

func (c *RedisCluster) healthy() error {
	running := 0
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		running++
		info, err := RedisDo(n.Addr(), "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_slots_ok:16384"} {
			if !strings.Contains(info, want) {
				return fmt.Errorf("%s: CLUSTER INFO lacks %s", n.Addr(), want)
			}
		}
		repl, err := RedisDo(n.Addr(), "INFO", "replication")
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica's link to its master is down", n.Addr())
		}
		if strings.Contains(repl, "role:master") && strings.Contains(repl, "connected_slaves:0") {
			if owns, _ := c.servesSlots(n); owns {
				return fmt.Errorf("%s: master without a connected replica", n.Addr())
			}
		}
	}
	// Every running node's view: each running node known and not failed,
	// each master serving slots with a replica.
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		nodes, err := nodesSeenBy(n.Addr())
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		alive, replicas := 0, map[string]int{}
		for _, v := range nodes {
			if r := c.Node(v.addr); r != nil && r.Running() && !v.failed && !strings.Contains(v.flags, "fail?") {
				alive++
				if !v.master {
					replicas[v.masterID]++
				}
			}
		}
		if alive != running {
			return fmt.Errorf("%s sees %d live nodes, %d are running", n.Addr(), alive, running)
		}
		for _, v := range nodes {
			if v.master && v.slots && replicas[v.id] == 0 {
				return fmt.Errorf("%s sees master %s without a replica", n.Addr(), v.addr)
			}
		}
	}
	return nil
}

func (c *RedisCluster) servesSlots(r *Redis) (bool, error) {
	nodes, err := c.nodes()
	if err != nil {
		return false, err
	}
	for _, n := range nodes {
		if n.addr == r.Addr() {
			return n.master && n.slots, nil
		}
	}
	return false, nil
}

// KillMaster ends master with SIGKILL and waits until its replica has been
// promoted and the cluster serves every slot again (cluster_state:ok on the
// surviving nodes). It returns the promoted node and how long after the
// kill the cluster was whole again. then runs right after the kill, before
// the wait (to resume a paused replica, say). The killed node stays down:
// RestartNode brings it back, as a replica.
func (c *RedisCluster) KillMaster(master *Redis, then ...func()) (promoted *Redis, took time.Duration) {
	c.t.Helper()
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	me, ok := nodeAt(nodes, master.Addr())
	if !ok || !me.master || !me.slots {
		c.t.Fatalf("KillMaster: %s is not a master serving slots", master.Addr())
	}
	id := me.id
	replicas := map[string]bool{}
	for _, n := range nodes {
		if n.masterID == id {
			replicas[n.id] = true
		}
	}
	if len(replicas) == 0 {
		c.t.Fatalf("KillMaster: %s has no replica to promote", master.Addr())
	}
	killed := time.Now()
	master.Kill()
	for _, f := range then {
		f()
	}
	deadline := killed.Add(clusterFormTimeout)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		nodes, err := c.nodes()
		if err != nil {
			continue
		}
		for _, n := range nodes {
			if replicas[n.id] && n.master && n.slots && !n.failed && c.allOK() {
				return c.Node(n.addr), time.Since(killed)
			}
		}
	}
	c.t.Fatalf("no replica of %s was promoted within %v\n%s", master.Addr(), clusterFormTimeout, c.logTails())
	return nil, 0
}

// nodeAt finds the node at addr in a CLUSTER NODES listing.
func nodeAt(nodes []clusterNode, addr string) (clusterNode, bool) {
	for _, n := range nodes {
		if n.addr == addr {
			return n, true
		}
	}
	return clusterNode{}, false
}

// ReplicaOf returns a running replica of master.
func (c *RedisCluster) ReplicaOf(master *Redis) *Redis {
	c.t.Helper()
	nodes, err := c.nodes()
	if err != nil {
		c.t.Fatal(err)
	}
	me, _ := nodeAt(nodes, master.Addr())
	id := me.id
	for _, n := range nodes {
		if n.masterID == id && id != "" {
			if r := c.Node(n.addr); r != nil && r.Running() {
				return r
			}
		}
	}
	c.t.Fatalf("%s has no running replica", master.Addr())
	return nil
}

// allOK reports whether every running node says cluster_state:ok.
func (c *RedisCluster) allOK() bool {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		info, err := RedisDo(n.Addr(), "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
	}
	return true
}

// RestartNode starts a stopped node again and waits until the cluster is
// healthy with it (a former master is a replica again, its link up).
func (c *RedisCluster) RestartNode(n *Redis) {
	c.t.Helper()
	n.Start()
	c.WaitHealthy()
}

// FlushAll empties every master, for tests that share a cluster.
func (c *RedisCluster) FlushAll() {
	c.t.Helper()
	for _, m := range c.Masters() {
		if _, err := RedisDo(m.Addr(), "FLUSHALL"); err != nil {
			c.t.Fatalf("FLUSHALL on %s: %v", m.Addr(), err)
		}
	}
}

// Pids returns the running nodes' process ids by address.
func (c *RedisCluster) Pids() map[string]int {
	out := map[string]int{}
	for _, n := range c.Nodes {
		if pid := n.Pid(); pid != 0 {
			out[n.Addr()] = pid
		}
	}
	return out
}

func (c *RedisCluster) logTails() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "=== node %s ===\n%s", n.Addr(), n.logTail())
	}
	return b.String()
}

// RedisDo sends one command to the server at addr over a fresh connection
// and returns its reply as text: a simple or bulk string as is, an integer
// in decimal, an array's elements (nested ones flattened) one per line. An
// error reply is returned as an error. It has no client-side retry, pooling
// or redirect of its own: the helpers above see each node as it answers.
func RedisDo(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return "", err
	}
	var lines []string
	if err := readReply(bufio.NewReader(conn), &lines); err != nil {
		return "", err
	}
	return strings.Join(lines, "\n"), nil
}

// readReply reads one RESP2 reply, appending its values to out.
func readReply(rd *bufio.Reader, out *[]string) error {
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		*out = append(*out, line[1:])
	case '-':
		return errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			*out = append(*out, "")
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return err
		}
		*out = append(*out, string(buf[:n]))
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return fmt.Errorf("bad array length %q", line)
		}
		for range n {
			if err := readReply(rd, out); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}
