package testinfra

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/config"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// RepoRoot is the module root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildServices builds every binary under services/ once per test process
// (with the race detector when the tests run with it) and returns the
// directory holding them.
func BuildServices(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		var flags []string
		if raceEnabled {
			flags = append(flags, "-race")
		}
		buildDir, buildErr = buildServicesInto(RepoRoot(t), flags, nil)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// buildServicesInto builds ./services/... of root into a new build
// directory (newBuildDir) with the given go build flags and extra
// environment.
func buildServicesInto(root string, flags, env []string) (string, error) {
	dir, err := newBuildDir()
	if err != nil {
		return "", err
	}
	args := append([]string{"build", "-o", dir + "/"}, flags...)
	args = append(args, "./services/...")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir, nil
}

// BuildOption configures BuildServicesOpt.
type BuildOption func(*buildConfig)

type buildConfig struct {
	race  bool
	flags []string
	env   []string
}

// WithRace sets whether the binaries get the race detector (by default they
// do when the tests run with it, as with BuildServices).
func WithRace(on bool) BuildOption {
	return func(c *buildConfig) { c.race = on }
}

// WithBuildFlags adds go build flags (e.g. "-trimpath").
func WithBuildFlags(flags ...string) BuildOption {
	return func(c *buildConfig) { c.flags = append(c.flags, flags...) }
}

// WithBuildEnv adds environment variables to the go build (e.g.
// "CGO_ENABLED=0").
func WithBuildEnv(env ...string) BuildOption {
	return func(c *buildConfig) { c.env = append(c.env, env...) }
}

// ReleaseBuild builds the binaries the way they ship (the Dockerfile and
// `make build`): no race detector, CGO_ENABLED=0, -trimpath. Performance
// measurements want these, whatever flags the test binary itself has.
func ReleaseBuild() BuildOption {
	return func(c *buildConfig) {
		c.race = false
		c.flags = append(c.flags, "-trimpath")
		c.env = append(c.env, "CGO_ENABLED=0")
	}
}

var (
	optBuildMu   sync.Mutex
	optBuildDirs = map[string]string{}
)

// BuildServicesOpt is BuildServices with a chosen build configuration. Each
// distinct configuration is built once per test process; the directory
// holding the binaries is returned (use it with StartProcessFrom).
func BuildServicesOpt(t testing.TB, opts ...BuildOption) string {
	t.Helper()
	cfg := buildConfig{race: raceEnabled}
	for _, o := range opts {
		o(&cfg)
	}
	flags := append([]string{}, cfg.flags...)
	if cfg.race {
		flags = append(flags, "-race")
	}
	key := strings.Join(flags, " ") + "|" + strings.Join(cfg.env, " ")
	optBuildMu.Lock()
	defer optBuildMu.Unlock()
	if dir, ok := optBuildDirs[key]; ok {
		return dir
	}
	dir, err := buildServicesInto(RepoRoot(t), flags, cfg.env)
	if err != nil {
		t.Fatal(err)
	}
	optBuildDirs[key] = dir
	return dir
}

// Process is a service binary run by a test, with its output kept in a log
// file and its lifecycle under the test's control.
type Process struct {
	t       testing.TB
	Name    string
	path    string
	env     []string
	ready   string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProcess starts binary (a name in BuildServices' directory) with env
// added to a minimal environment, and waits until readyURL (if any) answers
// 200. The process is killed when the test ends.
func StartProcess(t testing.TB, name, binary string, env []string, readyURL string) *Process {
	t.Helper()
	return StartProcessFrom(t, BuildServices(t), name, binary, env, readyURL)
}

// StartProcessFrom is StartProcess for a binary in binDir, e.g. a directory
// returned by BuildServicesOpt.
func StartProcessFrom(t testing.TB, binDir, name, binary string, env []string, readyURL string) *Process {
	t.Helper()
	p := &Process{
		t: t, Name: name, path: filepath.Join(binDir, binary), env: env, ready: readyURL,
		logPath: filepath.Join(t.TempDir(), name+".log"),
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("---- %s log (last 4 KiB) ----\n%s", name, tail(p.Logs(), 4096))
			// KEEP_LOGS=dir keeps whole logs of failed tests for a closer look.
			if dir := os.Getenv("KEEP_LOGS"); dir != "" {
				_ = os.MkdirAll(dir, 0o755)
				_ = os.WriteFile(filepath.Join(dir, name+".log"), []byte(p.Logs()), 0o644)
			}
		}
	})
	p.Start()
	return p
}

// Start starts (or restarts) the process and waits for readiness.
func (p *Process) Start() {
	p.t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.path)
	// The images' GODEBUG and the deployments' GOMAXPROCS first, so a
	// test's own (later) win.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"GODEBUG=" + config.SysmonGODEBUG, "GOMAXPROCS=" + config.DeployedGOMAXPROCS}, p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		p.t.Fatalf("start %s: %v", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if p.ready == "" {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			p.t.Fatalf("%s exited during start:\n%s", p.Name, tail(p.Logs(), 4096))
		default:
		}
		resp, err := http.Get(p.ready)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready at %s within 30s:\n%s", p.Name, p.ready, tail(p.Logs(), 4096))
}

// Signal sends sig and waits up to timeout for the exit; it reports whether
// the process exited in time.
func (p *Process) Signal(sig os.Signal, timeout time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Wait waits up to timeout for the process to exit by itself.
func (p *Process) Wait(timeout time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Stop sends SIGTERM and waits (a graceful stop); after 30 s it kills.
func (p *Process) Stop() {
	if !p.Signal(syscall.SIGTERM, 30*time.Second) {
		p.Kill()
	}
}

// Kill sends SIGKILL and waits.
func (p *Process) Kill() { p.Signal(syscall.SIGKILL, 10*time.Second) }

// Pid is the process id of the current run (0 before the first start).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// ExitCode is the exit code of the last run (-1 while running or killed).
func (p *Process) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Logs returns everything the process wrote so far.
func (p *Process) Logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// WaitLog waits until the log contains substr.
func (p *Process) WaitLog(ctx context.Context, substr string) error {
	for {
		if strings.Contains(p.Logs(), substr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %q not logged: %w", p.Name, substr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	b := []byte(s[len(s)-n:])
	// Start at a line, unless the only line break ends the text: a last
	// line longer than n is shown cut rather than not at all.
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
		b = b[i+1:]
	}
	return string(b)
}
