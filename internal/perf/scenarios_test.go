package perf

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// scenario is one load run against a fresh topology.
type scenario struct {
	Name     string
	Ladder   bool // one rung of the rate ladder (its row goes in the ladder table)
	Gateways int  // websocket-server processes
	Direct   bool // loadgen straight to the gateways instead of through nginx

	Users       int
	Rate        float64 // total messages per second (ignored with Idle)
	Idle        bool    // connect and hold, send nothing
	Duration    time.Duration
	Drain       time.Duration
	Ramp        float64 // connects per second
	MessageSize int
	Procs       int      // loadgen worker processes (0: enough for the open-file limit)
	SourceIPs   []string // nil: chosen from the users per destination
	Settle      time.Duration

	Partitions     int
	ProfileSeconds int      // CPU profile length, capped by the send phase
	Env            []string // added to every service, after the base env
	Traces         bool     // export every span to a sink (tracesink_test.go), as compose ships
	ExtraArgs      []string // appended to loadgen's arguments
}

// modelLatency is L, the offline model's latency the services run with: the
// last LLM_OFFLINE_LATENCY in the scenario's env (0 without one).
func (s scenario) modelLatency() time.Duration {
	var l time.Duration
	for _, kv := range s.Env {
		if v, ok := strings.CutPrefix(kv, "LLM_OFFLINE_LATENCY="); ok {
			if d, err := time.ParseDuration(v); err == nil {
				l = d
			}
		}
	}
	return l
}

// scenarioNames are the scenarios PERF_SCENARIO accepts ("all" is every one
// but smoke).
var scenarioNames = []string{"idle1", "idle2", "throughput", "slow", "overhead", "ladder"}

// ladderRates are the ladder's offered rates, msg/s (PERF_RATES overrides).
const ladderRates = "500,1000,2000,3000,4000"

// baseScenarios returns the runs of the named scenario with its defaults
// (overhead is one run per model latency).
func baseScenarios(name string) ([]scenario, error) {
	common := scenario{
		Gateways: 2, Duration: 60 * time.Second, Drain: 30 * time.Second, Ramp: 500, MessageSize: 64,
		Settle: 10 * time.Second, Partitions: 16, ProfileSeconds: 15,
	}
	s := common
	s.Name = name
	switch name {
	case "smoke":
		s.Users, s.Rate, s.Duration, s.Settle, s.ProfileSeconds = 50, 100, 3*time.Second, 2*time.Second, 2
	case "idle1":
		s.Gateways, s.Direct, s.Idle, s.Users, s.Ramp = 1, true, true, 15000, 2000
	case "idle2":
		s.Gateways, s.Direct, s.Idle, s.Users, s.Ramp = 2, true, true, 30000, 2000
	case "throughput":
		s.Users, s.Rate = 1000, 5000
	case "slow":
		s.Users, s.Rate = 2000, 1000
		s.Env = []string{"LLM_OFFLINE_LATENCY=1s", "AI_MAX_IN_FLIGHT=4096", "LLM_MAX_CONCURRENCY=4096", "RELAY_MAX_IN_FLIGHT=2048"}
	case "overhead":
		s.Users, s.Rate = 500, 500
		lats := "100ms,0s"
		if v := os.Getenv("PERF_LATENCIES"); v != "" {
			lats = v
		}
		var out []scenario
		for _, l := range strings.Split(lats, ",") {
			l = strings.TrimSpace(l)
			d, err := time.ParseDuration(l)
			if err != nil {
				return nil, fmt.Errorf("PERF_LATENCIES: %q: %w", l, err)
			}
			o := s
			o.Name = "overhead-" + d.String()
			o.Env = []string{"LLM_OFFLINE_LATENCY=" + d.String()}
			out = append(out, o)
		}
		return out, nil
	case "ladder":
		return ladderScenarios(s)
	default:
		return nil, fmt.Errorf("PERF_SCENARIO: unknown scenario %q (known: smoke, %s, all)", name, strings.Join(scenarioNames, ", "))
	}
	return []scenario{s}, nil
}

// ladderScenarios is one run per rate of PERF_RATES, each on a fresh
// topology: 500 users through nginx to two gateways, 20 s of sending, the
// model answering at once. The summary's ladder table reads them together.
func ladderScenarios(s scenario) ([]scenario, error) {
	rates := ladderRates
	if v := os.Getenv("PERF_RATES"); v != "" {
		rates = v
	}
	s.Users, s.Duration, s.Drain, s.Settle, s.ProfileSeconds = 500, 20*time.Second, 20*time.Second, 5*time.Second, 10
	// The gateways' /metrics scraped as often as Prometheus does (the
	// compose overlay's 15 s), not loadgen's default 1 s for memory peaks:
	// at 1 s the gzip'd exposition was 5% of a gateway's CPU at 3,000 msg/s,
	// a cost of the measurement that production does not pay.
	s.ExtraArgs = slices.Clip(append(s.ExtraArgs, "-scrape-interval", "15s"))
	var out []scenario
	for _, r := range splitList(rates) {
		f, err := strconv.ParseFloat(r, 64)
		if err != nil || f <= 0 {
			return nil, fmt.Errorf("PERF_RATES: %q is not a positive rate", r)
		}
		o := s
		o.Name, o.Rate, o.Ladder = fmt.Sprintf("ladder-%g", f), f, true
		out = append(out, o)
	}
	return out, nil
}

// selectedScenarios reads PERF_SCENARIO (comma list; "all") and applies the
// PERF_* overrides to every run.
func selectedScenarios(list string) ([]scenario, error) {
	var names []string
	for _, n := range strings.Split(list, ",") {
		switch n = strings.TrimSpace(n); n {
		case "":
		case "all":
			names = append(names, scenarioNames...)
		default:
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("PERF_SCENARIO=%q names no scenario", list)
	}
	var out []scenario
	for _, n := range names {
		runs, err := baseScenarios(n)
		if err != nil {
			return nil, err
		}
		for _, s := range runs {
			if err := applyOverrides(&s); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// applyOverrides applies the PERF_* environment variables.
func applyOverrides(s *scenario) error {
	var err error
	setInt := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" && err == nil {
			n, e := strconv.Atoi(v)
			if e != nil || n < 0 {
				err = fmt.Errorf("%s: %q is not a non-negative integer", name, v)
				return
			}
			*dst = n
		}
	}
	setFloat := func(name string, dst *float64) {
		if v := os.Getenv(name); v != "" && err == nil {
			f, e := strconv.ParseFloat(v, 64)
			if e != nil || f < 0 {
				err = fmt.Errorf("%s: %q is not a non-negative number", name, v)
				return
			}
			*dst = f
		}
	}
	setDur := func(name string, dst *time.Duration) {
		if v := os.Getenv(name); v != "" && err == nil {
			d, e := time.ParseDuration(v)
			if e != nil || d < 0 {
				err = fmt.Errorf("%s: %q is not a duration", name, v)
				return
			}
			*dst = d
		}
	}
	setInt("PERF_USERS", &s.Users)
	if !s.Ladder { // the ladder's rates are PERF_RATES
		setFloat("PERF_RATE", &s.Rate)
	}
	setDur("PERF_DURATION", &s.Duration)
	setDur("PERF_DRAIN", &s.Drain)
	setDur("PERF_SETTLE", &s.Settle)
	setFloat("PERF_RAMP", &s.Ramp)
	setInt("PERF_GATEWAYS", &s.Gateways)
	setInt("PERF_PROCS", &s.Procs)
	setInt("PERF_PARTITIONS", &s.Partitions)
	setInt("PERF_PROFILE_SECONDS", &s.ProfileSeconds)
	setInt("PERF_MESSAGE_SIZE", &s.MessageSize)
	if v := os.Getenv("PERF_DIRECT"); v != "" && err == nil {
		b, e := strconv.ParseBool(v)
		if e != nil {
			return fmt.Errorf("PERF_DIRECT: %q is not a boolean", v)
		}
		s.Direct = b
	}
	if v := os.Getenv("PERF_TRACES"); v != "" && err == nil {
		b, e := strconv.ParseBool(v)
		if e != nil {
			return fmt.Errorf("PERF_TRACES: %q is not a boolean", v)
		}
		s.Traces = b
	}
	if v := os.Getenv("PERF_SOURCE_IPS"); v != "" {
		s.SourceIPs = splitList(v)
	}
	if err != nil {
		return err
	}
	// PERF_ENV comes last, so it wins over the scenario's own settings.
	s.Env = append(append([]string{}, s.Env...), strings.Fields(os.Getenv("PERF_ENV"))...)
	for _, kv := range s.Env {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("PERF_ENV: %q is not NAME=value", kv)
		}
	}
	s.ExtraArgs = append(s.ExtraArgs, strings.Fields(os.Getenv("PERF_LOADGEN_ARGS"))...)
	switch {
	case s.Gateways < 1:
		return fmt.Errorf("%s: PERF_GATEWAYS must be at least 1", s.Name)
	case s.Users < 1:
		return fmt.Errorf("%s: PERF_USERS must be at least 1", s.Name)
	case !s.Idle && s.Rate <= 0:
		return fmt.Errorf("%s: PERF_RATE must be positive", s.Name)
	case s.Duration < time.Second:
		return fmt.Errorf("%s: PERF_DURATION must be at least 1s", s.Name)
	case s.Partitions < 1:
		return fmt.Errorf("%s: PERF_PARTITIONS must be at least 1", s.Name)
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// usersPerProc keeps every loadgen process well below the open-file limit
// (20,000 here; the generator keeps 100 in reserve).
const usersPerProc = 12000

// portsPerSource keeps each source→destination address pair well below the
// ~28,000 ephemeral ports of the default range.
const portsPerSource = 20000

// loadgenProcs is -procs: the configured count, or enough processes for the
// open-file limit.
func (s scenario) loadgenProcs() int {
	if s.Procs > 0 {
		return s.Procs
	}
	return max(1, int(math.Ceil(float64(s.Users)/usersPerProc)))
}

// sourceIPs is -source-ips: the configured list, or for runs straight to the
// gateways with many sockets enough loopback addresses (127.0.0.2, …) that
// each source→gateway pair stays within the ephemeral ports. Through nginx
// the generator must stay on 127.0.0.1, the only address nginx.conf exempts
// from its per-address limits.
func (s scenario) sourceIPs() []string {
	if s.SourceIPs != nil || !s.Direct {
		return s.SourceIPs
	}
	perDest := float64(s.Users) / float64(s.Gateways)
	if !s.Idle && perDest <= portsPerSource {
		return nil
	}
	n := max(2, int(math.Ceil(perDest/portsPerSource)))
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d", i+2)
	}
	return out
}
