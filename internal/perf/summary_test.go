package perf

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/chatrelay/chat/internal/loadgen"
)

// runResult is everything one scenario run produced.
type runResult struct {
	Name     string        `json:"name"`
	Topology string        `json:"topology"`
	Dir      string        `json:"dir"` // under PERF_OUT
	Args     []string      `json:"loadgen_args"`
	Env      []string      `json:"service_env"` // the scenario's extra service env
	Latency  time.Duration `json:"model_latency_ns"`
	Ladder   bool          `json:"ladder,omitempty"`
	Rate     float64       `json:"offered_rate,omitempty"`

	ExitCode int             `json:"loadgen_exit_code"`
	Error    string          `json:"error,omitempty"`
	Result   *loadgen.Result `json:"-"` // in loadgen.json

	SendStart  string               `json:"send_start"` // how the start of the send phase was seen
	Windows    map[string]cpuWindow `json:"cpu_windows"`
	LoadgenCPU float64              `json:"loadgen_cpu_s"` // whole run, from rusage
	// LoadgenSwitches is its context switches, whole run, from rusage.
	LoadgenSwitches float64  `json:"loadgen_switches"`
	ProfileSecs     int      `json:"profile_seconds"`
	Profiles        []string `json:"profiles"`
	ProfileErrors   []string `json:"profile_errors,omitempty"`
	// WaitMS is each service's mean wait for a CPU in the profiles' window
	// (go_sched_latencies_seconds).
	WaitMS map[string]float64 `json:"sched_wait_ms,omitempty"`
	Traces string             `json:"traces,omitempty"` // PERF_TRACES: what the sink took
	Stages string             `json:"stages,omitempty"` // PERF_TRACES: where the time goes (stages_test.go)
}

// processOrder is the column order of the CPU tables.
var processOrder = []string{"ai-consumer", "message-relay", "redis", "nginx", "broker", "loadgen"}

func ms(v float64) string { return fmt.Sprintf("%.1f", v) }

// row is the summary line of one run.
func (r *runResult) row() string {
	res := r.Result
	cells := []string{r.Name, r.Topology}
	if res == nil {
		msg := "no result"
		if r.Error != "" {
			msg = "no result: " + r.Error
		}
		cells = append(cells, msg)
		for len(cells) < 18 {
			cells = append(cells, "")
		}
		return "| " + strings.Join(cells, " | ") + " |"
	}
	cells = append(cells, fmt.Sprint(res.Connect.Users),
		fmt.Sprintf("%d (%.0f/s)", res.Connect.Connected, res.Connect.RatePerS))
	if res.Mode == "idle" {
		cells = append(cells, "idle", "–", "–", "–", "–", "–", "–", "–", "–", "–", "–", "–")
	} else {
		m, l := res.Messages, res.Latency
		cells = append(cells,
			fmt.Sprintf("%d (%.0f/s)", m.Sent, m.SendRatePerS),
			fmt.Sprintf("%d (%.0f/s)", m.Answered, m.AnswerRatePerS),
			fmt.Sprint(m.Lost), fmt.Sprint(m.Duplicated),
			ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max),
			ms(l.P50-float64(r.Latency)/float64(time.Millisecond)),
			ms(res.AckLatency.P50), ms(res.ScheduleLag.P99))
	}
	var rss []string
	for _, s := range res.Servers {
		if s.RSSPerConnection > 0 {
			rss = append(rss, fmt.Sprintf("%.1f", s.RSSPerConnection/1024))
		}
	}
	cells = append(cells, strings.Join(rss, " / "), r.cpuCell("send"))
	return "| " + strings.Join(cells, " | ") + " |"
}

const rowHeader = "| scenario | topology | users | connected (connect/s) | sent (msg/s) | answered (msg/s) | lost | dup | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p50 − L ms | ack p50 ms | lag p99 ms | RSS/socket KiB | CPU s in the send phase |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

// names lists the processes of a window in table order.
func names(w cpuWindow) []string {
	var gws []string
	for n := range w.CPU {
		if strings.HasPrefix(n, "gw-") {
			gws = append(gws, n)
		}
	}
	slices.Sort(gws)
	out := gws
	for _, n := range processOrder {
		if _, ok := w.CPU[n]; ok {
			out = append(out, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(w.CPU)) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// cpuCell is "gw-1 10.1, …, loadgen 5.0; 37.0 in 60 s = 0.62 cores".
func (r *runResult) cpuCell(win string) string {
	w, ok := r.Windows[win]
	if !ok {
		return "–"
	}
	var parts []string
	for _, n := range names(w) {
		parts = append(parts, fmt.Sprintf("%s %.1f", n, w.CPU[n]))
	}
	secs := max(w.Seconds, 0.001)
	return fmt.Sprintf("%s; %.1f in %.0f s = %.2f cores (machine %.2f)", strings.Join(parts, ", "), w.total(), w.Seconds, w.total()/secs, w.Machine/secs)
}

// summary renders the whole markdown summary.
func summary(header string, runs []*runResult) string {
	var b strings.Builder
	b.WriteString("# Performance runs\n\n")
	b.WriteString(header)
	b.WriteString("\nL is the offline model's latency (LLM_OFFLINE_LATENCY); p50 − L is the system's own share of the median. " +
		"RSS/socket is per gateway, (connected − before) RSS over the sockets. CPU seconds are user+system from /proc " +
		"(broker = the test process, which runs the kfake broker; nginx and loadgen include their worker processes).\n\n")
	b.WriteString(rowHeader + "\n")
	for _, r := range runs {
		b.WriteString(r.row() + "\n")
	}
	b.WriteString(ladderTable(runs))
	b.WriteString("\n## CPU seconds per process\n\n")
	b.WriteString("ramp: loadgen start until every socket is open; send: the send (or hold) phase; after: drain, close and settle (loadgen's own total is from its exit status).\n\n")
	b.WriteString("| scenario | window | wall s | CPU s per process | total | cores busy | machine cores busy (incl. anything else running) |\n|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		for _, win := range []string{"ramp", "send", "after"} {
			w, ok := r.Windows[win]
			if !ok {
				continue
			}
			var parts []string
			for _, n := range names(w) {
				parts = append(parts, fmt.Sprintf("%s %.1f", n, w.CPU[n]))
			}
			secs := max(w.Seconds, 0.001)
			fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %.1f | %.2f | %.2f |\n", r.Name, win, w.Seconds, strings.Join(parts, ", "), w.total(), w.total()/secs, w.Machine/secs)
		}
	}
	for _, r := range runs {
		fmt.Fprintf(&b, "\n## %s\n\n", r.Name)
		fmt.Fprintf(&b, "- files: `%s/` (loadgen.json, loadgen.txt, loadgen.log, profiles, service logs)\n", r.Dir)
		fmt.Fprintf(&b, "- loadgen %s\n", strings.Join(r.Args, " "))
		if len(r.Env) > 0 {
			fmt.Fprintf(&b, "- service env: %s\n", strings.Join(r.Env, " "))
		}
		fmt.Fprintf(&b, "- loadgen exit code %d, CPU %.1f s in total; send phase found by %s\n", r.ExitCode, r.LoadgenCPU, r.SendStart)
		if r.Error != "" {
			fmt.Fprintf(&b, "- error: %s\n", r.Error)
		}
		if r.ProfileSecs > 0 {
			fmt.Fprintf(&b, "- profiles (%d s CPU): %s\n", r.ProfileSecs, strings.Join(r.Profiles, ", "))
		}
		if len(r.WaitMS) > 0 {
			fmt.Fprintf(&b, "- wait for a CPU (a ready goroutine's mean wait to run, go_sched_latencies_seconds, in the profiles' window): %s\n", waitLine(r.WaitMS))
		}
		for _, e := range r.ProfileErrors {
			fmt.Fprintf(&b, "- profile failed: %s\n", e)
		}
		if r.Traces != "" {
			fmt.Fprintf(&b, "- %s\n", r.Traces)
		}
		if r.Stages != "" {
			fmt.Fprintf(&b, "\n%s\n", r.Stages)
		}
		res := r.Result
		if res == nil {
			continue
		}
		if len(res.Problems) > 0 {
			fmt.Fprintf(&b, "- problems: %s\n", strings.Join(res.Problems, "; "))
		}
		c := res.Connect
		fmt.Fprintf(&b, "- connect: %d/%d in %.1f s (%.0f/s), p50 %.1f ms p99 %.1f ms, failures %v, disconnects %v, reconnects %d\n",
			c.Connected, c.Users, res.Phases.RampS, c.RatePerS, res.ConnectLatency.P50, res.ConnectLatency.P99, c.Failures, c.Disconnects, c.Reconnects)
		if res.Mode != "idle" {
			m := res.Messages
			fmt.Fprintf(&b, "- messages: scheduled %d, sent %d, acked %d, answered %d, errored %d %v, skipped %d, send errors %d, unmatched %d; mean latency %.1f ms\n",
				m.Scheduled, m.Sent, m.Acked, m.Answered, m.Errored, m.Errors, m.SkippedDisconnected, m.SendErrors, m.Unmatched, res.Latency.Mean)
		}
		for _, s := range res.Servers {
			fmt.Fprintf(&b, "- %s: %s\n", s.URL, serverLine(s))
		}
		for _, cl := range res.Clients {
			fmt.Fprintf(&b, "- loadgen process %d: %d users, peak RSS %.1f MiB, %.1f KiB/socket\n", cl.Process, cl.Users, float64(cl.PeakRSSBytes)/(1<<20), cl.RSSPerSocketByte/1024)
		}
	}
	return b.String()
}

// waitLine is "name 0.120 ms, ..." in name order.
func waitLine(w map[string]float64) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s %.3f ms", name, w[name]))
	}
	return strings.Join(parts, ", ")
}

func serverLine(s loadgen.ServerStats) string {
	f := func(name string, x *loadgen.ServerSample) string {
		if x == nil {
			return name + " –"
		}
		return fmt.Sprintf("%s %.1f MiB/%d goroutines/%d sockets", name, float64(x.RSSBytes)/(1<<20), x.Goroutines, x.WSConnections)
	}
	return strings.Join([]string{f("before", s.Before), f("connected", s.Connected), f("peak", s.Peak), f("end", s.End), f("after", s.After)}, ", ") +
		fmt.Sprintf("; %.1f KiB/socket", s.RSSPerConnection/1024)
}

// writeSummary writes summary.md and summary.json under out.
func writeSummary(out, header string, runs []*runResult) (string, error) {
	md := summary(header, runs)
	if err := os.WriteFile(filepath.Join(out, "summary.md"), []byte(md), 0o644); err != nil {
		return md, err
	}
	b, _ := json.MarshalIndent(runs, "", "  ")
	return md, os.WriteFile(filepath.Join(out, "summary.json"), b, 0o644)
}

// kneeP99 is the latency the ladder's knee is measured against: the first
// rate whose p99 is above it, or that lost or did not answer everything, is
// past the knee.
const kneeP99 = 100.0 // ms

// ladderTable is the rate ladder: per rate, what was answered and how fast,
// and the CPU milliseconds each process spent per message sent in the send
// phase; then where the knee is; then the context switches per message.
// "" without ladder runs.
func ladderTable(runs []*runResult) string {
	var b, sw strings.Builder
	var knee string
	last := ""
	for _, r := range runs {
		if !r.Ladder || r.Result == nil {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("\n## Rate ladder\n\nCPU ms per message = CPU time from the start of sending to the end of the run (send phase, drain, close) / messages answered (services, then what shares the machine; loadgen's share is its CPU from its exit status less its CPU while the sockets opened).\n\n")
			b.WriteString("| offered msg/s | sent | answered | lost | dup | p50 ms | p99 ms | gateways (both) | ai-consumer | message-relay | broker | redis | nginx | loadgen | total |\n")
			b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
			sw.WriteString("\nContext switches per message, the same windows (every thread's voluntary and involuntary switches; machine: every CPU's, anything else running included):\n\n")
			sw.WriteString("| offered msg/s | gateways (both) | ai-consumer | message-relay | broker | redis | nginx | loadgen | machine |\n")
			sw.WriteString("|---|---|---|---|---|---|---|---|---|\n")
		}
		m, l := r.Result.Messages, r.Result.Latency
		cpu, switches := r.perMessage(func(w cpuWindow) map[string]float64 { return w.CPU }, r.LoadgenCPU, 1000),
			r.perMessage(func(w cpuWindow) map[string]float64 { return w.Switches }, r.LoadgenSwitches, 1)
		fmt.Fprintf(&b, "| %g | %d | %d | %d | %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
			r.Rate, m.Sent, m.Answered, m.Lost, m.Duplicated, l.P50, l.P99,
			cpu["gw-"], cpu["ai-consumer"], cpu["message-relay"], cpu["broker"], cpu["redis"], cpu["nginx"], cpu["loadgen"], cpu["total"])
		machine := (r.Windows["send"].MachineSwitches + r.Windows["after"].MachineSwitches) / float64(max(m.Answered, 1))
		fmt.Fprintf(&sw, "| %g | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
			r.Rate, switches["gw-"], switches["ai-consumer"], switches["message-relay"], switches["broker"], switches["redis"], switches["nginx"], switches["loadgen"], machine)
		ok := m.Lost == 0 && m.Duplicated == 0 && m.Answered >= m.Sent && l.P99 <= kneeP99
		switch {
		case knee != "":
		case !ok && last == "":
			knee = fmt.Sprintf("at or below %g msg/s (the first rate is past it)", r.Rate)
		case !ok:
			knee = fmt.Sprintf("between %s and %g msg/s", last, r.Rate)
		default:
			last = fmt.Sprintf("%g", r.Rate)
		}
	}
	if b.Len() == 0 {
		return ""
	}
	if knee == "" {
		knee = "above " + last + " msg/s (every rate answered all with p99 ≤ 100 ms)"
	}
	fmt.Fprintf(&b, "\nKnee (first rate with p99 > %.0f ms, or a message lost, duplicated or unanswered): %s.\n", kneeP99, knee)
	b.WriteString(sw.String())
	return b.String()
}

// perMessage is what each process (gateways added up under "gw-") and all
// of them ("total") spent of one measure (of, from a window), times scale,
// per answered message: in the send phase and what follows it (drain,
// close, settle) — a rate the system cannot keep up with is still being
// answered after the sending stops, and what it spends counts for the
// answers it makes. loadgen often exits before the send window's last
// sample (a quick drain), which then misses it: its share is its whole
// run's (loadgenTotal, from its exit status) less the ramp window's.
func (r *runResult) perMessage(of func(cpuWindow) map[string]float64, loadgenTotal, scale float64) map[string]float64 {
	out := map[string]float64{}
	for _, win := range []cpuWindow{r.Windows["send"], r.Windows["after"]} {
		for n, v := range of(win) {
			if strings.HasPrefix(n, "gw-") {
				out["gw-"] += v
			} else {
				out[n] += v
			}
			out["total"] += v
		}
	}
	if loadgenTotal > 0 {
		out["total"] -= out["loadgen"]
		out["loadgen"] = max(0, loadgenTotal-of(r.Windows["ramp"])["loadgen"])
		out["total"] += out["loadgen"]
	}
	n := float64(max(r.Result.Messages.Answered, 1))
	for k, v := range out {
		out[k] = v * scale / n
	}
	return out
}
