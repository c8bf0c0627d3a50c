package obscheck

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string { return testinfra.RepoRoot(t) }

// repoGlob returns the files matching pattern (relative to the repo root),
// failing when there are none.
func repoGlob(t testing.TB, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no file matches %s", pattern)
	}
	return files
}

// run runs a short command in dir and returns its combined output.
func run(t testing.TB, dir string, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tailBuffer keeps the last max bytes written to it; processes write their
// output here so a failing test can show it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append([]byte(nil), w.b[len(w.b)-w.max:]...)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

// proc is a server process owned by one test.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

// procStopTimeout bounds the graceful stop before SIGKILL.
const procStopTimeout = 10 * time.Second

// startProc starts bin with args and env (nothing inherited but PATH, HOME
// and TMPDIR). t.Cleanup stops it: SIGTERM to its process group, SIGKILL
// after procStopTimeout; on failure the tail of its output is logged.
func startProc(t testing.TB, name, bin string, args, env []string) *proc {
	t.Helper()
	p := &proc{name: name, out: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(baseEnv(), env...)
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setPdeathsig(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("---- %s output (tail) ----\n%s", name, p.out.String())
		}
	})
	return p
}

// stop ends the process group and waits for the process.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(procStopTimeout):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything the process started in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// setPdeathsig makes the child die with the test binary (Linux only; the
// field does not exist elsewhere), so a killed `go test` leaves nothing.
func setPdeathsig(attr *syscall.SysProcAttr) {
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.SetInt(int64(syscall.SIGKILL))
	}
}

func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// waitHTTP polls url until it answers 200, the process exits or timeout
// passes.
func waitHTTP(t testing.TB, p *proc, url string, timeout time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if done, err := p.exited(); done {
			t.Fatalf("%s exited before %s answered: %v\n%s", p.name, url, err, p.out.String())
		}
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s not ready after %s: %v\n%s", p.name, url, timeout, last, p.out.String())
}

// httpGet fetches url and returns the body.
func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return body, nil
}

// ---- the devstack binary ----

var (
	devstackOnce sync.Once
	devstackBin  string
	devstackErr  error
	buildDir     string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildDevstack builds services/devstack once per test binary.
func buildDevstack(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	devstackOnce.Do(func() {
		dir, err := os.MkdirTemp("", "obscheck-bin-")
		if err != nil {
			devstackErr = err
			return
		}
		buildDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./services/devstack")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			devstackErr = fmt.Errorf("go build ./services/devstack: %v\n%s", err, out)
			return
		}
		devstackBin = filepath.Join(dir, "devstack")
	})
	if devstackErr != nil {
		t.Fatal(devstackErr)
	}
	return devstackBin
}

// devstack is a running all-in-one chat system.
type devstack struct {
	proc     *proc
	httpAddr string // the gateway (ws://httpAddr/ws)
	opsAddr  string // /metrics, /readyz
	secret   string
}

const devSecret = "obscheck-auth-secret-0123456789"

// startDevstack builds and starts services/devstack on free loopback ports
// with the embedded broker and Redis and waits until /readyz says ready.
// extra adds or overrides environment variables (e.g. LLM_OFFLINE_LATENCY).
func startDevstack(t testing.TB, extra ...string) *devstack {
	t.Helper()
	bin := buildDevstack(t)
	d := &devstack{httpAddr: testinfra.FreeAddr(t), opsAddr: testinfra.FreeAddr(t), secret: devSecret}
	env := []string{
		"HTTP_ADDR=" + d.httpAddr,
		"OPS_ADDR=" + d.opsAddr,
		"AUTH_SECRET=" + d.secret,
		"LOG_LEVEL=info",
		"LLM_OFFLINE=true",
		// Short drains: the test stops the process while work is stuck.
		"SHUTDOWN_TIMEOUT=5s",
		"GATEWAY_DRAIN_TIMEOUT=1s",
		"AI_DRAIN_TIMEOUT=1s",
		"RELAY_DRAIN_TIMEOUT=1s",
	}
	env = append(env, extra...)
	d.proc = startProc(t, "devstack", bin, nil, env)
	waitHTTP(t, d.proc, "http://"+d.opsAddr+"/readyz", 60*time.Second)
	return d
}

// lines splits s into trimmed non-empty lines.
func lines(s string) []string { return splitTrimmed(s, "\n") }

// splitTrimmed splits s at sep into trimmed non-empty parts.
func splitTrimmed(s, sep string) []string {
	var out []string
	for _, l := range strings.Split(s, sep) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
