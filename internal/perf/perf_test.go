package perf

// The performance harness. Each scenario gets a fresh topology (see
// topology_test.go) and one run of bin/loadgen as a subprocess; while the
// send phase runs, every service gives a CPU profile (and the gateways a heap
// profile), and the CPU time of every process is read from /proc before and
// after it.
//
//	make perf SCENARIO=throughput            # one scenario, release build
//	make perf SCENARIO=idle1,idle2           # several, each on a fresh topology
//	make perf SCENARIO=all                   # idle1 idle2 throughput slow overhead
//
// Scenarios (PERF_SCENARIO, comma-separated):
//
//	smoke       2 gateways behind nginx, 50 users, 100 msg/s, 3 s (the default without PERF_SCENARIO)
//	idle1       1 gateway, 15,000 idle sockets straight to it, held 60 s, ramp 2,000/s
//	idle2       2 gateways, 30,000 idle sockets straight to them (15,000 each)
//	throughput  2 gateways behind nginx, 1,000 users, 5,000 msg/s for 60 s, model answering at once
//	slow        same, LLM_OFFLINE_LATENCY=1s, 2,000 users, 1,000 msg/s, in-flight limits raised
//	overhead    same, 500 users, 500 msg/s, once per model latency L in PERF_LATENCIES (default 100ms,0s)
//	ladder      same, 500 users, 20 s at each rate of PERF_RATES (default 500,1000,2000,3000,4000), a fresh topology per rate
//
// Overrides, applied to every selected run: PERF_USERS, PERF_RATE (total
// msg/s), PERF_DURATION, PERF_DRAIN, PERF_SETTLE, PERF_RAMP (connects/s),
// PERF_GATEWAYS, PERF_DIRECT (true: loadgen straight to the gateways instead
// of through nginx), PERF_TRACES (true: every service exports its spans
// over OTLP/HTTP, as compose ships, to a sink that discards them),
// PERF_PROCS (loadgen processes), PERF_SOURCE_IPS,
// PERF_RATES (the ladder's rates), PERF_BIN (a directory of service
// binaries to run instead of this commit's), PERF_PARTITIONS (default 16), PERF_PROFILE_SECONDS (default 15, capped by
// the send phase), PERF_MESSAGE_SIZE, PERF_ENV (extra service env, e.g.
// "LLM_OFFLINE_LATENCY=1s AI_MAX_IN_FLIGHT=4096"; it wins over the
// scenario's), PERF_LOADGEN_ARGS (extra loadgen flags) and PERF_LATENCIES.
//
// Output goes to PERF_OUT (default: a new temporary directory, printed):
// summary.md (one row per run), summary.json, and per run a directory with
// loadgen.json, loadgen.txt (its table), loadgen.log (progress), cpu-*.pprof
// of every service and of the test process (the broker), heap-gw-*.pprof and
// the service logs.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/loadgen"
	"github.com/chatrelay/chat/internal/testinfra"
)

func TestPerf(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system as separate processes")
	}
	testinfra.RequireBinary(t, "redis-server")

	list := os.Getenv("PERF_SCENARIO")
	smoke := list == ""
	if smoke {
		list = "smoke"
	}
	scenarios, err := selectedScenarios(list)
	if err != nil {
		t.Fatal(err)
	}

	// The smoke checks the harness, not speed: it runs the services as the
	// rest of the suite builds them (with -race under -race), sharing that
	// build. Real runs use the binaries as they ship.
	var binDir, build string
	if smoke {
		binDir = testinfra.BuildServices(t)
		build = "as the test suite builds them"
		if raceEnabled {
			build += " (-race)"
		}
	} else {
		binDir = testinfra.BuildServicesOpt(t, testinfra.ReleaseBuild())
		build = "release (no -race, CGO_ENABLED=0, -trimpath)"
		if raceEnabled {
			t.Log("warning: the test binary runs with -race, so the broker (in this process) is slowed down; use make perf")
		}
	}

	// PERF_BIN runs the services from other binaries (say, a build of an
	// earlier commit) with this harness and load generator, so a change is
	// measured side by side with what it replaces on the same noisy machine.
	svcDir := binDir
	if v := os.Getenv("PERF_BIN"); v != "" && !smoke {
		if svcDir, err = filepath.Abs(v); err != nil {
			t.Fatal(err)
		}
		build = "from PERF_BIN " + svcDir
	}

	out := os.Getenv("PERF_OUT")
	switch {
	case out != "" && !filepath.IsAbs(out):
		out = filepath.Join(testinfra.RepoRoot(t), out)
	case out == "" && smoke:
		out = t.TempDir()
	case out == "":
		if out, err = os.MkdirTemp("", "chat-perf-"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("PERF_OUT=%s", out)

	header := fmt.Sprintf("- %s, %d cores, %s/%s, %s; services built %s; commit %s\n",
		time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), build, gitCommit(t))
	var runs []*runResult
	var md string
	for _, s := range scenarios {
		t.Run(s.Name, func(t *testing.T) {
			r := runScenario(t, s, svcDir, binDir, out)
			runs = append(runs, r)
			if md, err = writeSummary(out, header, runs); err != nil {
				t.Errorf("write summary: %v", err)
			}
		})
	}
	t.Logf("summary (%s):\n%s", filepath.Join(out, "summary.md"), md)
	// Problems are reported after every run, on the parent test: a failed
	// subtest would dump every service log into the output, and they are
	// in PERF_OUT already.
	if !smoke {
		for _, r := range runs {
			checkRun(t, r)
		}
	}

	if smoke {
		checkSmoke(t, out, runs)
	}
}

// checkRun reports what went wrong in a real run without stopping the others.
func checkRun(t *testing.T, r *runResult) {
	t.Helper()
	switch {
	case r.Result == nil:
		t.Errorf("%s: loadgen gave no result (exit %d): %s", r.Name, r.ExitCode, r.Error)
	case !r.Result.OK:
		t.Errorf("%s: %s", r.Name, strings.Join(r.Result.Problems, "; "))
	}
}

// checkSmoke is the smoke's assertions: integrity and a complete output, no
// timing.
func checkSmoke(t *testing.T, out string, runs []*runResult) {
	t.Helper()
	if len(runs) != 1 || runs[0].Result == nil {
		t.Fatalf("smoke: no loadgen result: %+v", runs)
	}
	r := runs[0]
	res, m := r.Result, r.Result.Messages
	if r.ExitCode != 0 || !res.OK || m.Lost != 0 || m.Duplicated != 0 || m.Sent == 0 || m.Answered != m.Sent {
		t.Errorf("smoke: exit %d ok=%v problems=%q messages %+v", r.ExitCode, res.OK, res.Problems, m)
	}
	if len(res.Servers) != 2 {
		t.Errorf("smoke: loadgen scraped %d servers, want the 2 gateways", len(res.Servers))
	}
	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	if err != nil || !bytes.Contains(md, []byte("\n| smoke | ")) {
		t.Errorf("smoke: summary.md has no smoke row (%v):\n%s", err, md)
	}
	want := []string{"gw-1", "gw-2", "ai-consumer", "message-relay", "redis", "nginx", "broker", "loadgen"}
	for _, win := range []string{"ramp", "send"} {
		for _, n := range want {
			// loadgen may exit before the send window's last sample (a
			// drain of a few milliseconds, on a quiet machine): its CPU
			// then comes from its exit status, which the ladder uses.
			if n == "loadgen" && win == "send" && r.LoadgenCPU > 0 {
				continue
			}
			if _, ok := r.Windows[win].CPU[n]; !ok {
				t.Errorf("smoke: no CPU time for %s in the %s window: %+v", n, win, r.Windows[win])
			}
		}
	}
	for _, n := range []string{"gw-1", "gw-2", "ai-consumer", "message-relay"} {
		if w, ok := r.WaitMS[n]; !ok || w < 0 {
			t.Errorf("smoke: no wait for a CPU for %s: %v", n, r.WaitMS)
		}
	}
	for _, f := range []string{"loadgen.json", "loadgen.txt", "cpu-gw-1.pprof", "cpu-gw-2.pprof", "cpu-ai-consumer.pprof",
		"cpu-message-relay.pprof", "heap-gw-1.pprof", "heap-gw-2.pprof", "websocket-server-1.log"} {
		if fi, err := os.Stat(filepath.Join(out, r.Dir, f)); err != nil || (fi.Size() == 0 && !strings.HasSuffix(f, ".log")) {
			t.Errorf("smoke: %s missing or empty (%v); profile errors: %q", f, err, r.ProfileErrors)
		}
	}
}

func gitCommit(t *testing.T) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = testinfra.RepoRoot(t)
	b, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// loadgenArgs are the flags of the run (the secret goes in the environment).
func loadgenArgs(s scenario, tp *topology, jsonPath string) []string {
	var metrics []string
	for _, ops := range tp.GwOps {
		metrics = append(metrics, ops+"/metrics")
	}
	args := []string{
		"-url", strings.Join(tp.wsURLs(), ","),
		"-metrics", strings.Join(metrics, ","),
		"-users", strconv.Itoa(s.Users),
		"-duration", s.Duration.String(),
		"-ramp", strconv.FormatFloat(s.Ramp, 'f', -1, 64),
		"-procs", strconv.Itoa(s.loadgenProcs()),
		"-settle", s.Settle.String(),
		"-progress", "5s",
		"-json", jsonPath,
	}
	if s.Idle {
		args = append(args, "-idle")
	} else {
		args = append(args, "-rate", strconv.FormatFloat(s.Rate, 'f', -1, 64), "-drain", s.Drain.String(),
			"-message-size", strconv.Itoa(s.MessageSize))
	}
	if ips := s.sourceIPs(); len(ips) > 0 {
		args = append(args, "-source-ips", strings.Join(ips, ","))
	}
	return append(args, s.ExtraArgs...)
}

// runScenario starts a topology, runs loadgen against it and measures.
func runScenario(t *testing.T, s scenario, svcDir, loadgenDir, out string) *runResult {
	dir := filepath.Join(out, s.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &runResult{Name: s.Name, Dir: s.Name, Env: s.Env, Latency: s.modelLatency(), Windows: map[string]cpuWindow{}, Ladder: s.Ladder, Rate: s.Rate}
	r.Topology = fmt.Sprintf("%d gw, %s", s.Gateways, map[bool]string{true: "direct", false: "nginx"}[s.Direct])
	if l := r.Latency; l > 0 {
		r.Topology += ", L=" + l.String()
	}
	if s.Traces {
		r.Topology += ", traces exported"
	}

	tp := startTopology(t, s, svcDir)
	defer tp.saveLogs(dir)

	jsonPath := filepath.Join(dir, "loadgen.json")
	_ = os.Remove(jsonPath)
	r.Args = loadgenArgs(s, tp, jsonPath)
	// The table and summary name the json file relative to the run's dir.
	shown := append([]string{}, r.Args...)
	for i := range shown {
		if shown[i] == jsonPath {
			shown[i] = "loadgen.json"
		}
	}
	r.Args = shown
	t.Logf("loadgen %s", strings.Join(r.Args, " "))

	stdout, err := os.Create(filepath.Join(dir, "loadgen.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	logFile, err := os.Create(filepath.Join(dir, "loadgen.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	limit := s.Duration + s.Drain + s.Settle + time.Duration(float64(s.Users)/max(s.Ramp, 1)*float64(time.Second)) + 5*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(loadgenDir, "loadgen"), loadgenArgs(s, tp, jsonPath)...)
	cmd.Env = append(os.Environ(), "AUTH_SECRET="+testSecret)
	cmd.Stdout = stdout
	cmd.Stderr = &lineLogger{t: t, prefix: s.Name + ": ", file: logFile}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	baseCtx, baseCancel := context.WithTimeout(context.Background(), 5*time.Second)
	baseline, err := openSockets(baseCtx, tp.GwOps)
	baseCancel()
	if err != nil {
		t.Fatalf("scrape gateways: %v", err)
	}

	roots := tp.roots()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start loadgen: %v", err)
	}
	roots = append(roots, procRoot{Name: "loadgen", Pid: cmd.Process.Pid, Children: true})
	s0 := sampleCPU(roots)
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	// The send (or hold) phase starts once every socket is open.
	r.SendStart = waitAllOpen(ctx, tp.GwOps, baseline+float64(s.Users), exited)
	s1 := sampleCPU(roots)
	sendStart := s1.At
	r.Windows["ramp"] = window(s0, s1)

	// Profiles in the middle of the send phase.
	var profWG sync.WaitGroup
	if r.SendStart != "loadgen exited" {
		r.ProfileSecs = max(1, min(s.ProfileSeconds, int(s.Duration.Seconds()*2/3)))
		offset := (s.Duration - time.Duration(r.ProfileSecs)*time.Second) / 2
		profWG.Add(1)
		go func() {
			defer profWG.Done()
			select {
			case <-time.After(offset):
			case <-exited:
				return
			}
			pctx, pcancel := context.WithTimeout(ctx, time.Duration(r.ProfileSecs)*time.Second+time.Minute)
			defer pcancel()
			r.Profiles, r.ProfileErrors, r.WaitMS = profileSet(pctx, dir, tp.services(), r.ProfileSecs)
		}()
		select {
		case <-time.After(time.Until(sendStart.Add(s.Duration))):
		case <-exited:
		}
		s2 := sampleCPU(roots)
		r.Windows["send"] = window(s1, s2)
		s1 = s2
	}
	<-exited
	profWG.Wait()
	s3 := sampleCPU(roots)
	r.Windows["after"] = window(s1, s3)

	if ps := cmd.ProcessState; ps != nil {
		r.ExitCode = ps.ExitCode()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			r.LoadgenCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
			r.LoadgenSwitches = float64(ru.Nvcsw + ru.Nivcsw)
		}
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) || ctx.Err() != nil {
		r.Error = fmt.Sprintf("loadgen: %v (limit %s: %v)", waitErr, limit, ctx.Err())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		if r.Error == "" {
			r.Error = fmt.Sprintf("loadgen exit %d wrote no result; see %s/loadgen.log", r.ExitCode, s.Name)
		}
		return r
	}
	var res loadgen.Result
	if err := json.Unmarshal(b, &res); err != nil {
		r.Error = fmt.Sprintf("loadgen.json: %v", err)
		return r
	}
	r.Result = &res
	if tp.Traces != nil {
		r.Traces = tp.Traces.note(int64(res.Messages.Answered))
		r.Stages = tp.Traces.stages.table()
	}
	return r
}

// waitAllOpen waits until the gateways hold want sockets, the count has not
// moved for 10 s (some connects failed), or loadgen exits; it says which.
func waitAllOpen(ctx context.Context, gwOps []string, want float64, exited <-chan struct{}) string {
	last, lastChange := -1.0, time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			return "loadgen exited"
		case <-ctx.Done():
			return "timeout"
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := openSockets(sctx, gwOps)
		cancel()
		if err != nil {
			continue
		}
		if n >= want {
			return "every socket open"
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if n > 0 && time.Since(lastChange) > 10*time.Second {
			return fmt.Sprintf("open sockets stuck at %.0f of %.0f", n, want)
		}
	}
}

// lineLogger writes loadgen's stderr to a file and, line by line, to the
// test log.
type lineLogger struct {
	t      *testing.T
	prefix string
	file   *os.File
	mu     sync.Mutex
	buf    []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.file.Write(p)
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.t.Log(l.prefix + string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}
