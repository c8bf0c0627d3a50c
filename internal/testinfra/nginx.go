package testinfra

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Markers around the upstream server lines in nginx/nginx.conf.
const (
	nginxUpstreamBegin = "# BEGIN upstream servers"
	nginxUpstreamEnd   = "# END upstream servers"
)

// NginxConfRelPath is the production nginx config, relative to the repo root.
const NginxConfRelPath = "nginx/nginx.conf"

// Nginx is a real nginx started by StartNginx from the repo's nginx.conf.
type Nginx struct {
	t        testing.TB
	dir      string
	confPath string
	addr     string
	cmd      *exec.Cmd
	output   *nginxOutput
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
}

// NginxUpstream is one `server` line of the upstream block.
type NginxUpstream struct {
	Addr   string // host:port
	Params string // e.g. "max_fails=1 fail_timeout=10s", may be empty
}

var nginxServerLine = regexp.MustCompile(`^\s*server\s+(\S+?)(?:\s+([^;]*?))?\s*;\s*(?:#.*)?$`)

// ParseNginxUpstreams returns the server lines between the
// "# BEGIN upstream servers" and "# END upstream servers" markers of an
// nginx config. Lines that are comments or blank are ignored; anything else
// between the markers is an error, so the block stays simple to rewrite.
func ParseNginxUpstreams(conf []byte) ([]NginxUpstream, error) {
	begin, end, err := nginxUpstreamBlock(conf)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(conf), "\n")
	var out []NginxUpstream
	for _, l := range lines[begin+1 : end] {
		trimmed := strings.TrimSpace(l)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		m := nginxServerLine.FindStringSubmatch(l)
		if m == nil {
			return nil, fmt.Errorf("unexpected line between upstream markers: %q", l)
		}
		out = append(out, NginxUpstream{Addr: m[1], Params: m[2]})
	}
	if len(out) == 0 {
		return nil, errors.New("no server lines between upstream markers")
	}
	return out, nil
}

// nginxUpstreamBlock returns the line indexes of the begin and end markers.
func nginxUpstreamBlock(conf []byte) (begin, end int, err error) {
	begin, end = -1, -1
	for i, l := range strings.Split(string(conf), "\n") {
		switch strings.TrimSpace(l) {
		case nginxUpstreamBegin:
			if begin >= 0 {
				return 0, 0, fmt.Errorf("%q appears twice", nginxUpstreamBegin)
			}
			begin = i
		case nginxUpstreamEnd:
			if end >= 0 {
				return 0, 0, fmt.Errorf("%q appears twice", nginxUpstreamEnd)
			}
			end = i
		}
	}
	if begin < 0 || end < 0 || end < begin {
		return 0, 0, fmt.Errorf("nginx config needs %q ... %q around the upstream server lines", nginxUpstreamBegin, nginxUpstreamEnd)
	}
	return begin, end, nil
}

// NginxLocalConfig is the result of DeriveNginxConfig.
type NginxLocalConfig struct {
	Conf          []byte
	ErrorLogPath  string
	AccessLogPath string
}

var (
	reNginxUser     = regexp.MustCompile(`(?m)^[ \t]*user[ \t]+[^;]*;[^\n]*$`)
	reNginxListen   = regexp.MustCompile(`(?m)^([ \t]*)listen[ \t]+[^;]*;`)
	reNginxPid      = regexp.MustCompile(`(?m)^([ \t]*)pid[ \t]+[^;]*;`)
	reNginxErrorLog = regexp.MustCompile(`(?m)^([ \t]*)error_log[ \t]+(\S+?)((?:[ \t]+\w+)?)[ \t]*;`)
	reNginxAccess   = regexp.MustCompile(`(?m)^([ \t]*)access_log[ \t]+(\S+?)((?:[ \t]+[^;]*)?);`)
	reNginxTemp     = regexp.MustCompile(`(?m)^([ \t]*)(client_body|proxy|fastcgi|uwsgi|scgi)_temp_path[ \t]+[^;]*;`)
	reNginxInclude  = regexp.MustCompile(`(?m)^[ \t]*include[ \t]`)
	// resolver and resolver_timeout lines, anywhere (http or upstream).
	reNginxResolver = regexp.MustCompile(`(?m)^[ \t]*resolver(?:_timeout)?[ \t]+[^;]*;[^\n]*\n`)
)

// withoutResolve drops the `resolve` parameter from a server line's
// parameters and reports whether it was there.
func withoutResolve(params string) (string, bool) {
	var kept []string
	found := false
	for _, p := range strings.Fields(params) {
		if p == "resolve" {
			found = true
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, " "), found
}

// stripNginxResolve removes what the tests' nginx cannot run and does not
// need: the resolver lines (Debian's nginx 1.22 refuses them in an upstream
// block, and Docker's 127.0.0.11 does not answer outside a container). The
// servers' `resolve` parameter goes with the server lines, which are
// rewritten anyway; a config that asks for `resolve` without a resolver is
// refused here, since nginx 1.22 cannot tell.
func stripNginxResolve(s string, resolve bool) (string, error) {
	hasResolver := false
	for _, m := range reNginxResolver.FindAllString(s, -1) {
		if strings.HasPrefix(strings.TrimSpace(m), "resolver ") {
			hasResolver = true
		}
	}
	if resolve && !hasResolver {
		return "", errors.New("nginx.conf: upstream servers use `resolve` but no `resolver` is set")
	}
	return reNginxResolver.ReplaceAllString(s, ""), nil
}

// rewriteNginxUpstreams replaces the server lines between the markers with
// one per upstream, keeping the parameters of the first original line but
// `resolve`, and drops the resolver lines (stripNginxResolve).
func rewriteNginxUpstreams(conf []byte, upstreams []string) (string, error) {
	servers, err := ParseNginxUpstreams(conf)
	if err != nil {
		return "", err
	}
	begin, end, _ := nginxUpstreamBlock(conf)
	lines := strings.Split(string(conf), "\n")
	indent := lines[begin][:len(lines[begin])-len(strings.TrimLeft(lines[begin], " \t"))]
	params, resolve := withoutResolve(servers[0].Params)
	block := []string{lines[begin]}
	for _, u := range upstreams {
		l := indent + "server " + u
		if params != "" {
			l += " " + params
		}
		block = append(block, l+";")
	}
	block = append(block, lines[end])
	out := append([]string{}, lines[:begin]...)
	out = append(out, block...)
	out = append(out, lines[end+1:]...)
	return stripNginxResolve(strings.Join(out, "\n"), resolve)
}

// DeriveNginxConfig turns the production nginx.conf into one that runs as
// the current user out of dir, listening on listenAddr and proxying to
// upstreams. Every substitution must find its directive in conf, so a config
// that drifts from the expected form fails loudly instead of being tested
// half-rewritten.
func DeriveNginxConfig(conf []byte, dir, listenAddr string, upstreams []string) (NginxLocalConfig, error) {
	var res NginxLocalConfig
	if len(upstreams) == 0 {
		return res, errors.New("no upstreams given")
	}
	if reNginxInclude.Match(conf) {
		return res, errors.New("nginx.conf uses include: keep it self-contained so it can be tested as is")
	}

	s, err := rewriteNginxUpstreams(conf, upstreams)
	if err != nil {
		return res, err
	}

	replace := func(re *regexp.Regexp, what string, repl func(m []string) string, wantOne bool) error {
		ms := re.FindAllStringSubmatchIndex(s, -1)
		if len(ms) == 0 {
			return fmt.Errorf("nginx.conf: no %s directive to rewrite", what)
		}
		if wantOne && len(ms) != 1 {
			return fmt.Errorf("nginx.conf: %d %s directives, want exactly one", len(ms), what)
		}
		s = re.ReplaceAllStringFunc(s, func(match string) string {
			return repl(re.FindStringSubmatch(match))
		})
		return nil
	}

	// The user directive only matters when the master runs as root; the
	// workers then need to reach the temp paths inside the 0700 test dir, so
	// they run as root too. Otherwise nginx runs as the current user and the
	// directive would only cause a warning.
	s = reNginxUser.ReplaceAllString(s, "")
	if os.Geteuid() == 0 {
		s = "user root;\n" + s
	}
	if err := replace(reNginxListen, "listen", func(m []string) string {
		return m[1] + "listen " + listenAddr + ";"
	}, true); err != nil {
		return res, err
	}
	if err := replace(reNginxPid, "pid", func(m []string) string {
		return m[1] + "pid " + filepath.Join(dir, "nginx.pid") + ";"
	}, true); err != nil {
		return res, err
	}
	res.ErrorLogPath = filepath.Join(dir, "error.log")
	if err := replace(reNginxErrorLog, "error_log", func(m []string) string {
		level := m[3]
		if strings.TrimSpace(level) == "" || strings.TrimSpace(level) == "warn" {
			level = " info" // more detail for failing tests
		}
		return m[1] + "error_log " + res.ErrorLogPath + level + ";"
	}, false); err != nil {
		return res, err
	}
	res.AccessLogPath = filepath.Join(dir, "access.log")
	if err := replace(reNginxAccess, "access_log", func(m []string) string {
		if m[2] == "off" {
			return m[0]
		}
		return m[1] + "access_log " + res.AccessLogPath + m[3] + ";"
	}, false); err != nil {
		return res, err
	}
	if err := replace(reNginxTemp, "*_temp_path", func(m []string) string {
		return m[1] + m[2] + "_temp_path " + filepath.Join(dir, "temp", m[2]) + ";"
	}, false); err != nil {
		return res, err
	}
	if n := len(reNginxTemp.FindAllString(s, -1)); n != 5 {
		return res, fmt.Errorf("nginx.conf: %d *_temp_path directives, want all 5 (client_body, proxy, fastcgi, uwsgi, scgi) so nginx never writes outside its dir", n)
	}
	res.Conf = []byte(s)
	return res, nil
}

// nginxRepoRoot walks up from the working directory to the directory holding
// go.mod.
func nginxRepoRoot(t testing.TB) string { return RepoRoot(t) }

// requireNginx finds nginx on PATH or in the sbin directories, which are not
// always on a non-root PATH.
func requireNginx(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return RequireBinary(t, "nginx")
}

// NginxTest runs `nginx -t` on the config derived from the repo's nginx.conf
// and returns its output; it fails the test if nginx rejects the config.
func NginxTest(t testing.TB, upstreams []string) string {
	t.Helper()
	bin := requireNginx(t)
	dir := t.TempDir()
	confPath, local := writeNginxConfig(t, dir, FreeAddr(t), upstreams)
	out, err := exec.Command(bin, "-t", "-p", dir, "-e", local.ErrorLogPath, "-c", confPath).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t rejected the derived config: %v\n%s\n--- config ---\n%s", err, out, local.Conf)
	}
	return string(out)
}

func writeNginxConfig(t testing.TB, dir, listenAddr string, upstreams []string) (string, NginxLocalConfig) {
	t.Helper()
	src := filepath.Join(nginxRepoRoot(t), NginxConfRelPath)
	conf, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("read nginx config: %v", err)
	}
	local, err := DeriveNginxConfig(conf, dir, listenAddr, upstreams)
	if err != nil {
		t.Fatalf("derive nginx config from %s: %v", NginxConfRelPath, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o755); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, local.Conf, 0o644); err != nil {
		t.Fatal(err)
	}
	return confPath, local
}

// StartNginx runs nginx with the repo's nginx/nginx.conf, rewritten to listen
// on a free loopback port and to proxy to upstreams (host:port). It returns
// once nginx answers /healthz; t.Cleanup stops it.
func StartNginx(t testing.TB, upstreams []string) *Nginx {
	t.Helper()
	bin := requireNginx(t)

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		addr := FreeAddr(t)
		confPath, local := writeNginxConfig(t, dir, addr, upstreams)
		n := &Nginx{
			t:        t,
			dir:      dir,
			confPath: confPath,
			addr:     addr,
			output:   &nginxOutput{},
			done:     make(chan struct{}),
		}
		n.cmd = exec.Command(bin, "-p", dir, "-e", local.ErrorLogPath, "-c", confPath, "-g", "daemon off;")
		n.cmd.Stdout = n.output
		n.cmd.Stderr = n.output
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := n.cmd.Start(); err != nil {
			t.Fatalf("start nginx: %v", err)
		}
		go func() {
			n.waitErr = n.cmd.Wait()
			close(n.done)
		}()
		t.Cleanup(n.Stop)

		err := n.waitReady(15 * time.Second)
		if err == nil {
			return n
		}
		n.Stop()
		lastErr = err
		// Another process may have taken the port between FreeAddr and
		// nginx's bind; try a new one.
		if !strings.Contains(n.ErrorLog()+n.output.String(), "Address already in use") {
			break
		}
	}
	t.Fatalf("nginx did not start: %v", lastErr)
	return nil
}

func (n *Nginx) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-n.done:
			return fmt.Errorf("nginx exited: %v\n%s", n.waitErr, n.diagnostics())
		default:
		}
		resp, err := client.Get(n.URL() + "/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/healthz not answering after %s: %v\n%s", timeout, err, n.diagnostics())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *Nginx) diagnostics() string {
	return fmt.Sprintf("--- nginx output ---\n%s--- error.log ---\n%s", n.output.String(), n.ErrorLog())
}

// Addr is nginx's listen address (127.0.0.1:port).
func (n *Nginx) Addr() string { return n.addr }

// URL is http://Addr.
func (n *Nginx) URL() string { return "http://" + n.addr }

// Dir is nginx's prefix directory holding the config, logs and temp files.
func (n *Nginx) Dir() string { return n.dir }

// Pid is the process id of nginx's master process; the workers are its
// children.
func (n *Nginx) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// ConfigPath is the derived config nginx runs with.
func (n *Nginx) ConfigPath() string { return n.confPath }

// AccessLog returns the access log written so far (JSON lines).
func (n *Nginx) AccessLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "access.log"))
	return string(b)
}

// ErrorLog returns nginx's error log written so far.
func (n *Nginx) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return string(b)
}

// Stop shuts nginx down (SIGTERM, then SIGKILL after 5s) and waits for it.
// It is safe to call more than once. A failed test gets the error log.
func (n *Nginx) Stop() {
	n.stopOnce.Do(func() {
		if n.cmd.Process != nil {
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-n.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
				<-n.done
			}
		}
		if n.t.Failed() {
			n.t.Logf("nginx diagnostics (%s):\n%s", n.confPath, n.diagnostics())
		}
	})
}

// WaitHealthy polls path (e.g. "/upstream-healthz") until it returns 200.
func (n *Nginx) WaitHealthy(ctx context.Context, path string) error {
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type nginxOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *nginxOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *nginxOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Publish stands for compose's `ports: "8080:80"`: it returns a TCP
// forwarder (a Proxy) on a new free loopback port, so clients reach nginx
// on another port than the one it listens on and the Host header they send
// names a port nginx's own variables ($server_port) do not know. A test
// that dials nginx's listen address directly cannot tell
// `$host:$server_port` from the client's real Host; one that dials the
// published port can. The Proxy's Refuse and Accept stand for a network
// outage as the client sees it.
func (n *Nginx) Publish(t testing.TB) *Proxy { return StartProxy(t, n.addr) }
