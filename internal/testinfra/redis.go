package testinfra

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisReadyTimeout bounds how long we wait for a fresh or restarted
// redis-server to answer PING. Replaying a large append-only file can take a
// moment, but ten seconds is far beyond anything a test writes.
const redisReadyTimeout = 10 * time.Second

// redisStopTimeout bounds a graceful stop before we fall back to SIGKILL, so
// a wedged server cannot hang the test's cleanup.
const redisStopTimeout = 10 * time.Second

// RedisOption configures StartRedis.
type RedisOption func(*redisConfig)

type redisConfig struct {
	persistence bool
	args        []string
	clusterBus  bool // pick the port so that port+10000 is free as well
}

// clusterBusOffset is how far above its port a cluster node binds its bus.
const clusterBusOffset = 10000

// withClusterBus picks the port for a cluster node, whose bus takes the
// port 10000 above it: both are picked below the kernel's range of
// outgoing ports (see freeports.go).
func withClusterBus() RedisOption {
	return func(c *redisConfig) { c.clusterBus = true }
}

// WithPersistence turns on the append-only file with appendfsync always, so
// every acknowledged write survives Stop, Kill and Restart. Without it the
// server keeps nothing on disk, which is what most tests want: state from a
// previous run can never leak into the next one.
func WithPersistence() RedisOption {
	return func(c *redisConfig) { c.persistence = true }
}

// WithRedisArgs appends raw redis-server arguments (for example
// "--maxmemory", "1mb") for the rare test that needs a setting we do not
// model; later arguments win over our defaults.
func WithRedisArgs(args ...string) RedisOption {
	return func(c *redisConfig) { c.args = append(c.args, args...) }
}

// Redis is a redis-server process owned by one test. It keeps its port and
// directory across Stop/Start so clients can reconnect to the same address
// and, with WithPersistence, find their data again.
//
// Start, Stop, Kill and Restart report failures with t.Fatal, so call them
// from the test's own goroutine.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	cfg  redisConfig

	mu   sync.Mutex
	proc *redisProc // nil while stopped
}

// redisProc is one run of the server; a restart gets a fresh one so a late
// exit of the old process cannot be mistaken for the new one dying.
type redisProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returns
	err  error         // Wait's result, valid after done
}

// StartRedis starts redis-server on a free loopback port and waits until it
// answers PING. The server is stopped by t.Cleanup, which also runs when the
// test panics, so no process outlives the test.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	bin := RequireBinary(t, "redis-server")
	r := &Redis{
		t:   t,
		bin: bin,
		dir: t.TempDir(),
	}
	for _, o := range opts {
		o(&r.cfg)
	}
	r.port = redisPort(t, r.cfg)
	// Registered after t.TempDir, so it runs before the directory is
	// removed (cleanups run last-in first-out).
	t.Cleanup(r.Stop)
	r.Start()
	return r
}

// redisPort picks the server's port (FreePort), its bus port's too for a
// cluster node.
func redisPort(t testing.TB, cfg redisConfig) int {
	if cfg.clusterBus {
		if p, ok := pickBelowRange(clusterBusOffset); ok {
			return p
		}
	}
	return FreePort(t)
}

// Addr returns host:port for go-redis's Options.Addr.
func (r *Redis) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
}

// URL returns a redis:// URL for redis.ParseURL and for services configured
// through the environment.
func (r *Redis) URL() string {
	return "redis://" + r.Addr() + "/0"
}

// Dir returns the server's working directory (log file, append-only files).
func (r *Redis) Dir() string { return r.dir }

// Pid returns the server's process id, or 0 while it is stopped.
func (r *Redis) Pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil || r.proc.cmd.Process == nil {
		return 0
	}
	return r.proc.cmd.Process.Pid
}

// Running reports whether the server process is alive.
func (r *Redis) Running() bool {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Start starts the server again on the same port and directory and waits
// until it answers PING. It does nothing if the server is already running.
func (r *Redis) Start() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
}

// Stop shuts the server down with SIGTERM, as an orchestrator would, and
// waits for it to exit; it escalates to SIGKILL if the server ignores the
// signal. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	r.t.Helper()
	if err := r.stop(syscall.SIGTERM); err != nil {
		r.t.Errorf("stop redis-server: %v", err)
	}
}

// Kill ends the server with SIGKILL, simulating a crash: nothing is flushed
// beyond what appendfsync already wrote.
func (r *Redis) Kill() {
	r.t.Helper()
	if err := r.stop(syscall.SIGKILL); err != nil {
		r.t.Errorf("kill redis-server: %v", err)
	}
}

// Restart stops the server gracefully and starts it again on the same
// address.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	r.Start()
}

func (r *Redis) args() []string {
	logFile := filepath.Join(r.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--logfile", logFile,
		"--daemonize", "no",
		"--save", "",
	}
	if r.cfg.persistence {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, r.cfg.args...)
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		select {
		case <-r.proc.done:
			r.proc = nil
		default:
			return nil
		}
	}

	// Anything redis prints before its log file is open (a bad argument,
	// a failed bind) lands here, so it can go into failure messages.
	out, err := os.OpenFile(filepath.Join(r.dir, "redis.stdout"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open output file: %w", err)
	}
	defer out.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(r.bin, r.args()...)
	cmd.Dir = r.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", r.bin, err)
	}
	p := &redisProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	r.proc = p

	if err := r.waitReady(p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		r.proc = nil
		return fmt.Errorf("%w\n%s", err, r.logTail())
	}
	return nil
}

// waitReady polls with a raw PING rather than a go-redis client so the
// helper has no client-side retry or pooling behaviour of its own to debug.
func (r *Redis) waitReady(p *redisProc) error {
	deadline := time.Now().Add(redisReadyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited before answering PING: %v", p.err)
		default:
		}
		lastErr = redisPing(r.Addr())
		if lastErr == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer PING within %v: %w", r.Addr(), redisReadyTimeout, lastErr)
}

// redisPing succeeds only on +PONG: a server still loading its append-only
// file answers -LOADING, and a test must not start before the data is back.
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func (r *Redis) stop(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.proc
	if p == nil {
		return nil
	}
	r.proc = nil
	select {
	case <-p.done:
		return nil // already dead: nothing to stop
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(redisStopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("redis-server ignored %v for %v and was killed\n%s", sig, redisStopTimeout, r.logTail())
}

// logTail returns the end of the server's output for failure messages.
func (r *Redis) logTail() string {
	var b strings.Builder
	for _, name := range []string{"redis.stdout", "redis.log"} {
		data, err := os.ReadFile(filepath.Join(r.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		const max = 4 << 10
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", name, data)
	}
	if b.Len() == 0 {
		return "(redis-server wrote no output)"
	}
	return b.String()
}

// dieWithParent asks the kernel to SIGKILL the child if the test binary dies
// without running its cleanups (go test -timeout, a crash, kill -9), so no
// orphaned server keeps a port. Pdeathsig exists only on Linux; setting it
// by reflection keeps this file building elsewhere, where the field is simply
// absent and we rely on t.Cleanup alone.
func dieWithParent() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	return attr
}
