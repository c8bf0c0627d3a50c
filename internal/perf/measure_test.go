package perf

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// procRoot is a process whose CPU time is sampled; with Children its live
// descendants are added (nginx's workers, loadgen's worker processes).
type procRoot struct {
	Name     string
	Pid      int
	Children bool
}

// cpuSample is the CPU seconds (user+system) each root had used at At, and
// the machine's busy CPU seconds since boot; and the same for context
// switches (a thread leaving its CPU: voluntary, to wait, or involuntary,
// preempted), which on this machine cost more than most of what a message
// does (docs/performance.md, "the sixth round").
type cpuSample struct {
	At              time.Time
	CPU             map[string]float64
	Machine         float64
	Switches        map[string]float64
	MachineSwitches float64
}

// machineStat is the busy time of all CPUs since boot (/proc/stat: user,
// nice, system, irq, softirq, steal), in seconds, and the context switches
// of every CPU since boot (its ctxt line).
func machineStat() (busy, switches float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 9 && f[0] == "cpu":
			for _, i := range []int{1, 2, 3, 6, 7, 8} {
				v, _ := strconv.ParseFloat(f[i], 64)
				busy += v
			}
		case len(f) == 2 && f[0] == "ctxt":
			switches, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return busy / clockTicks, switches
}

// procSwitches is the context switches every live thread of pid has made
// (/proc/<pid>/task/*/status); a thread that has ended is not counted (Go
// keeps its threads, nginx and Redis run a fixed few).
func procSwitches(pid int) float64 {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0.0
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, v, ok := strings.Cut(line, ":")
			if ok && (name == "voluntary_ctxt_switches" || name == "nonvoluntary_ctxt_switches") {
				c, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += c
			}
		}
	}
	return n
}

// procStat reads ppid and utime+stime (seconds) of pid from /proc.
func procStat(pid int) (ppid int, cpu float64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold spaces; fields
	// after it start with the state (field 3).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return ppid, (ut + st) / clockTicks, true
}

// children maps every live process to its children.
func children() map[int][]int {
	out := map[int][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(pid); ok {
			out[ppid] = append(out[ppid], pid)
		}
	}
	return out
}

// sampleCPU reads the CPU time of every root (and its descendants when
// asked). A process that is gone counts as absent, not zero.
func sampleCPU(roots []procRoot) cpuSample {
	s := cpuSample{At: time.Now(), CPU: map[string]float64{}, Switches: map[string]float64{}}
	s.Machine, s.MachineSwitches = machineStat()
	var kids map[int][]int
	for _, r := range roots {
		if r.Pid <= 0 {
			continue
		}
		pids := []int{r.Pid}
		if r.Children {
			if kids == nil {
				kids = children()
			}
			for i := 0; i < len(pids); i++ {
				pids = append(pids, kids[pids[i]]...)
			}
		}
		total, switches, any := 0.0, 0.0, false
		for _, p := range pids {
			if _, c, ok := procStat(p); ok {
				total += c
				switches += procSwitches(p)
				any = true
			}
		}
		if any {
			s.CPU[r.Name] += total
			s.Switches[r.Name] += switches
		}
	}
	return s
}

// cpuWindow is the CPU seconds each process used between two samples.
type cpuWindow struct {
	Seconds float64            `json:"seconds"` // wall-clock length
	CPU     map[string]float64 `json:"cpu_s"`
	// Machine is the busy CPU time of the whole machine, ours and
	// anything else running at the same time.
	Machine float64 `json:"machine_cpu_s"`
	// Switches and MachineSwitches are the context switches made in the
	// window, as CPU and Machine are the CPU time.
	Switches        map[string]float64 `json:"switches,omitempty"`
	MachineSwitches float64            `json:"machine_switches"`
}

func window(a, b cpuSample) cpuWindow {
	return cpuWindow{Seconds: b.At.Sub(a.At).Seconds(), CPU: grown(a.CPU, b.CPU), Machine: max(0, b.Machine-a.Machine),
		Switches: grown(a.Switches, b.Switches), MachineSwitches: max(0, b.MachineSwitches-a.MachineSwitches)}
}

// grown is how much each counter present in both samples grew from a to b.
func grown(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for name, end := range b {
		if start, ok := a[name]; ok {
			out[name] = max(0, end-start)
		}
	}
	return out
}

func (w cpuWindow) total() float64 {
	t := 0.0
	for _, v := range w.CPU {
		t += v
	}
	return t
}

// fetch GETs url into path.
func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// profileSet takes, at once, a CPU profile of seconds from every service and
// of the test process (the broker), then a heap profile of the services that
// want one. Files go to dir; failures are returned, not fatal. waitMS is
// each service's mean wait for a CPU over the CPU profile's window (see
// schedWait); a build that does not export it has none.
func profileSet(ctx context.Context, dir string, svcs []service, seconds int) (files []string, errs []string, waitMS map[string]float64) {
	waitMS = map[string]float64{}
	var mu sync.Mutex
	note := func(file string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err.Error())
			return
		}
		files = append(files, file)
	}
	var wg sync.WaitGroup
	for _, s := range svcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "cpu-" + s.Name + ".pprof"
			url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", s.Ops, seconds)
			before, beforeErr := schedWait(ctx, s.Ops)
			if err := fetch(ctx, url, filepath.Join(dir, name)); err != nil {
				note("", fmt.Errorf("%s CPU profile: %w", s.Name, err))
				return
			}
			note(name, nil)
			if after, err := schedWait(ctx, s.Ops); err == nil && beforeErr == nil && after.count > before.count {
				mu.Lock()
				waitMS[s.Name] = (after.sum - before.sum) / (after.count - before.count) * 1000
				mu.Unlock()
			}
			if s.Heap {
				name := "heap-" + s.Name + ".pprof"
				if err := fetch(ctx, s.Ops+"/debug/pprof/heap", filepath.Join(dir, name)); err != nil {
					note("", fmt.Errorf("%s heap profile: %w", s.Name, err))
					return
				}
				note(name, nil)
			}
		}()
	}
	// The broker lives in this process; a test run with -cpuprofile
	// already profiles it, and then this one is skipped.
	wg.Add(1)
	go func() {
		defer wg.Done()
		name := "cpu-broker.pprof"
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			note("", err)
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = os.Remove(f.Name())
			note("", fmt.Errorf("broker CPU profile: %w", err))
			return
		}
		select {
		case <-time.After(time.Duration(seconds) * time.Second):
		case <-ctx.Done():
		}
		pprof.StopCPUProfile()
		note(name, nil)
	}()
	wg.Wait()
	slices.Sort(files)
	return files, errs, waitMS
}

// schedTotals are a service's go_sched_latencies_seconds sum and count: how
// long its goroutines, once ready, waited to run (the runtime samples them).
type schedTotals struct{ sum, count float64 }

func schedWait(ctx context.Context, ops string) (schedTotals, error) {
	v, err := scrapeSums(ctx, ops+"/metrics", "go_sched_latencies_seconds_sum", "go_sched_latencies_seconds_count")
	if err != nil {
		return schedTotals{}, err
	}
	return schedTotals{v[0], v[1]}, nil
}

// scrapeGauge sums the samples of metric (exact name, any labels) on a
// Prometheus text page.
func scrapeGauge(ctx context.Context, url, metric string) (float64, error) {
	v, err := scrapeSums(ctx, url, metric)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// scrapeSums sums the samples of each metric (exact name, any labels) on
// one read of a Prometheus text page, so related series (a histogram's sum
// and count) come from the same moment; a metric without samples is an
// error.
func scrapeSums(ctx context.Context, url string, metrics ...string) ([]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sums, found := make([]float64, len(metrics)), make([]bool, len(metrics))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for i, metric := range metrics {
			if v, ok := sample(sc.Text(), metric); ok {
				sums[i] += v
				found[i] = true
			}
		}
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("%s: no %s", url, metrics[i])
		}
	}
	return sums, sc.Err()
}

// sample is the value of line if it is a sample of metric.
func sample(line, metric string) (float64, bool) {
	rest, ok := strings.CutPrefix(line, metric)
	if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
		return 0, false
	}
	if rest[0] == '{' {
		rest = rest[strings.LastIndexByte(rest, '}')+1:]
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return v, err == nil
}

// openSockets is chat_ws_connections summed over the gateways.
func openSockets(ctx context.Context, gwOps []string) (float64, error) {
	total := 0.0
	for _, ops := range gwOps {
		v, err := scrapeGauge(ctx, ops+"/metrics", "chat_ws_connections")
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}
