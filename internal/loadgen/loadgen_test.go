package loadgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Lost, duplicated, errored, overtaken and slow answers are each counted
// for what they are; the exit code and the JSON say so.
func TestAccounting(t *testing.T) {
	f := newFakeChat(t, func(f *fakeChat) {
		f.plan = func(n int) action {
			switch n {
			case 3:
				return action{delay: 300 * time.Millisecond}
			case 5:
				return action{drop: true}
			case 7:
				return action{duplicate: true}
			case 9:
				return action{twoAnswers: true}
			case 11:
				return action{errorAfter: "the model refused"}
			case 13:
				return action{answerFirst: true}
			case 15:
				return action{refuse: "message could not be queued; please send it again"}
			}
			return action{}
		}
		f.expectContent = 100
	})
	out := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	code := Main([]string{"-url", f.wsURL(), "-metrics", f.metricsURL(), "-users", "4", "-rate", "40", "-duration", "1s",
		"-drain", "1s", "-message-size", "100", "-progress", "0", "-settle", "0s", "-json", out},
		&stdout, &stderr, func(k string) string {
			if k == "AUTH_SECRET" {
				return testSecret
			}
			return ""
		})
	t.Log(stdout.String(), stderr.String())
	if code != ExitFailed {
		t.Fatalf("exit code %d, want %d (lost and duplicated)", code, ExitFailed)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	m := res.Messages
	want := MessageStats{Scheduled: 40, Sent: 40, Acked: 39, Answered: 37, Errored: 2, ErrorFrames: 2, Lost: 1, LostAcked: 1, Duplicated: 2}
	got := MessageStats{Scheduled: m.Scheduled, Sent: m.Sent, Acked: m.Acked, Answered: m.Answered, Errored: m.Errored,
		ErrorFrames: m.ErrorFrames, Lost: m.Lost, LostAcked: m.LostAcked, Duplicated: m.Duplicated, Unmatched: m.Unmatched,
		SkippedDisconnected: m.SkippedDisconnected, SendErrors: m.SendErrors}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("messages:\n got %+v\nwant %+v", got, want)
	}
	if m.Errors["the model refused"] != 1 || m.Errors["message could not be queued; please send it again"] != 1 {
		t.Errorf("errors by message: %v", m.Errors)
	}
	if res.Latency.Count != 37 || res.Latency.Max < 300 || res.Latency.P50 > 100 {
		t.Errorf("latency %+v: want 37 answers, the slow one above 300 ms, the median fast", res.Latency)
	}
	if res.AckLatency.Count != 39 || res.ScheduleLag.Count != 40 {
		t.Errorf("ack latency count %d (want 39), schedule lag count %d (want 40)", res.AckLatency.Count, res.ScheduleLag.Count)
	}
	if res.OK || len(res.Problems) != 2 {
		t.Errorf("ok=%v problems=%q, want lost and duplicated", res.OK, res.Problems)
	}
	if f.badFrames.Load() != 0 {
		t.Errorf("server refused %d frames (wrong size or shape)", f.badFrames.Load())
	}
	if !strings.Contains(stdout.String(), "lost 1") || !strings.Contains(stdout.String(), "FAILED") {
		t.Errorf("table does not show the loss:\n%s", stdout.String())
	}
	checkJSONFields(t, b)
}

// checkJSONFields asserts the documented schema is there.
func checkJSONFields(t *testing.T, b []byte) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	paths := []string{
		"schema", "run_id", "mode", "started_at", "processes", "config.users", "config.rate_per_s",
		"phases.ramp_s", "phases.send_s", "phases.drain_s",
		"connect.attempts", "connect.connected", "connect.failed", "connect.failures", "connect.rate_per_s", "connect.peak_open",
		"connect.disconnects", "connect.reconnects",
		"messages.scheduled", "messages.sent", "messages.acked", "messages.answered", "messages.errored", "messages.errors",
		"messages.lost", "messages.duplicated", "messages.unmatched", "messages.send_rate_per_s", "messages.answer_rate_per_s",
		"latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.p99_9", "latency_ms.max",
		"ack_latency_ms.p99", "schedule_lag_ms.p99", "schedule_lag_ms.max", "connect_latency_ms.p99",
		"servers", "clients", "histograms.latency.counts", "ok", "problems",
	}
	for _, p := range paths {
		var cur any = doc
		for _, k := range strings.Split(p, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				cur = nil
				break
			}
			cur = m[k]
		}
		if cur == nil {
			t.Errorf("JSON result has no %s", p)
		}
	}
	if servers, _ := doc["servers"].([]any); len(servers) > 0 {
		s := servers[0].(map[string]any)
		for _, when := range []string{"before", "peak", "after"} {
			smp, _ := s[when].(map[string]any)
			for _, k := range []string{"rss_bytes", "goroutines", "ws_connections"} {
				if _, ok := smp[k]; !ok {
					t.Errorf("servers[0].%s has no %s", when, k)
				}
			}
		}
	}
}

// Long answers arrive fragmented, pings arrive between them, and the server
// metrics are scraped before, at the peak and after.
func TestFragmentsPingsAndScrapes(t *testing.T) {
	f := newFakeChat(t, func(f *fakeChat) {
		f.writeBufSize = 64
		f.answerSize = 5000
		f.pingEvery = 20 * time.Millisecond
		f.withClientID = true
		f.expectContent = 300
	})
	cfg := testConfig(f)
	cfg.Users = 10
	cfg.Rate, cfg.UserRate = 0, 10
	cfg.MessageSize = 300
	cfg.Settle = 5 * time.Second // at most: it ends when the server saw the closes
	res := run(t, cfg)
	m := res.Messages
	if !res.OK || m.Sent != 100 || m.Answered != 100 || m.Lost != 0 || m.Duplicated != 0 || m.Unmatched != 0 || len(m.Errors) != 0 {
		t.Fatalf("ok=%v %+v", res.OK, m)
	}
	if f.pongs.Load() == 0 {
		t.Error("the client never answered a ping")
	}
	if f.badFrames.Load() != 0 {
		t.Errorf("server refused %d frames", f.badFrames.Load())
	}
	if len(res.Servers) != 1 {
		t.Fatalf("servers: %+v", res.Servers)
	}
	s := res.Servers[0]
	if s.Before == nil || s.Peak == nil || s.After == nil || s.Connected == nil || s.End == nil {
		t.Fatalf("missing samples: %+v", s)
	}
	if s.Before.WSConnections != 0 || s.Connected.WSConnections != 10 || s.Peak.WSConnections != 10 || s.After.WSConnections != 0 {
		t.Errorf("ws connections before/connected/peak/after = %d/%d/%d/%d, want 0/10/10/0",
			s.Before.WSConnections, s.Connected.WSConnections, s.Peak.WSConnections, s.After.WSConnections)
	}
	if s.Peak.Goroutines != 42 || s.Peak.RSSBytes != 10<<20+10*10<<10 || s.RSSPerConnection != 10<<10 {
		t.Errorf("peak %+v, rss per connection %v", s.Peak, s.RSSPerConnection)
	}
	if len(res.Clients) != 1 || res.Clients[0].PeakSockets != 10 || res.Clients[0].PeakRSSBytes == 0 {
		t.Errorf("clients: %+v", res.Clients)
	}
}

// The open model: sends keep to the clock while the server takes longer to
// answer than the whole sending phase.
func TestOpenModelKeepsTheClock(t *testing.T) {
	f := newFakeChat(t, func(f *fakeChat) { f.respDelay = 2 * time.Second })
	cfg := testConfig(f)
	cfg.Users = 10
	cfg.Rate = 100
	cfg.Drain = 5 * time.Second
	res := run(t, cfg)
	m := res.Messages
	if m.Scheduled != 100 || m.Sent != 100 || m.Answered != 100 || !res.OK {
		t.Fatalf("ok=%v %+v", res.OK, m)
	}
	f.mu.Lock()
	arr := append([]time.Time(nil), f.arrivals...)
	f.mu.Unlock()
	spread := arr[len(arr)-1].Sub(arr[0])
	// Message k is due at k/100 s: the last one 0.99 s after the first, long
	// before the first answer (2 s) could have released a closed-model client.
	if spread < 900*time.Millisecond || spread > 1900*time.Millisecond {
		t.Errorf("messages arrived over %v, want ≈0.99s", spread)
	}
	if res.Latency.P50 < 2000 {
		t.Errorf("latency p50 %.1f ms, want ≥ the server's 2000 ms", res.Latency.P50)
	}
	if res.ScheduleLag.P99 > 500 {
		t.Errorf("schedule lag p99 %.1f ms: sends did not keep to the clock", res.ScheduleLag.P99)
	}
	if m.SendRatePerS < 70 || m.SendRatePerS > 110 {
		t.Errorf("send rate %.1f/s, want ≈100", m.SendRatePerS)
	}
}

func TestScheduleOffsets(t *testing.T) {
	for _, tc := range []struct {
		k    int64
		rate float64
		want time.Duration
	}{{0, 10, 0}, {1, 10, 100 * time.Millisecond}, {5000, 5000, time.Second}, {3, 0.5, 6 * time.Second}, {7, 7000, time.Millisecond}} {
		if got := scheduleOffset(tc.k, tc.rate); got != tc.want {
			t.Errorf("scheduleOffset(%d, %v) = %v, want %v", tc.k, tc.rate, got, tc.want)
		}
	}
}

// Histograms from several processes merge bucket for bucket into the one a
// single process would have recorded.
func TestHistogramMergeIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	direct := newHist()
	parts := []*hist{newHist(), newHist(), newHist()}
	for i := range 100000 {
		d := time.Duration(math.Exp(rng.NormFloat64()*2+9)) * time.Microsecond // ~8 ms median, long tail
		if i%1000 == 0 {
			d = 2 * time.Hour // clamped to the highest trackable value
		}
		direct.record(d)
		parts[rng.IntN(3)].record(d)
	}
	var wire []HistData
	for _, p := range parts {
		b, err := json.Marshal(p.data())
		if err != nil {
			t.Fatal(err)
		}
		var d HistData
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		wire = append(wire, d)
	}
	merged, err := mergeHists(wire...)
	if err != nil {
		t.Fatal(err)
	}
	want := direct.data()
	if !reflect.DeepEqual(merged, want) {
		t.Fatalf("merged histogram differs: %d vs %d buckets, totals %d vs %d", len(merged.Counts), len(want.Counts), merged.Total, want.Total)
	}
	a, _ := decodeHist(merged)
	b := direct.h
	for _, q := range []float64{0, 50, 90, 99, 99.9, 99.99, 100} {
		if a.ValueAtQuantile(q) != b.ValueAtQuantile(q) {
			t.Errorf("q%v: merged %d, direct %d", q, a.ValueAtQuantile(q), b.ValueAtQuantile(q))
		}
	}
	if a.Max() != b.Max() || a.Min() != b.Min() || a.Mean() != b.Mean() || a.TotalCount() != 100000 {
		t.Errorf("merged max/min/mean/count %d/%d/%v/%d, direct %d/%d/%v", a.Max(), a.Min(), a.Mean(), a.TotalCount(), b.Max(), b.Min(), b.Mean())
	}
	if summarize(merged) != summarize(want) {
		t.Errorf("summaries differ: %+v vs %+v", summarize(merged), summarize(want))
	}
	bad := merged
	bad.Total++
	if _, err := decodeHist(bad); err == nil {
		t.Error("a histogram whose buckets do not add up decoded")
	}
}

// Worker results add up: counters, maps, histograms, processes.
func TestMergeResults(t *testing.T) {
	mk := func(idx int, sent int64, lat ...time.Duration) *Result {
		h := newHist()
		for _, d := range lat {
			h.record(d)
		}
		return &Result{RunID: "lgx", Processes: 1, Phases: Phases{RampS: float64(idx + 1), SendS: 10, DrainS: 1},
			Connect:    ConnectStats{Users: 5, Attempts: 5, Connected: 4, Failed: 1, Failures: map[string]int64{"http_503": 1}, PeakOpen: 4},
			Messages:   MessageStats{Sent: sent, Answered: int64(len(lat)), Lost: 1, Errors: map[string]int64{"x": 2}},
			Clients:    []ClientStats{{Process: idx, Users: 5, PeakSockets: 4}},
			Histograms: Histograms{Latency: h.data()}}
	}
	m, err := mergeResults([]*Result{mk(0, 10, time.Millisecond, 3*time.Millisecond), mk(1, 20, 2*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if m.Processes != 2 || m.Connect.Connected != 8 || m.Connect.Failures["http_503"] != 2 || m.Messages.Sent != 30 ||
		m.Messages.Lost != 2 || m.Messages.Errors["x"] != 4 || len(m.Clients) != 2 || m.Phases.RampS != 2 || m.Connect.PeakOpen != 8 {
		t.Fatalf("merged %+v", m)
	}
	if m.Latency.Count != 3 || m.Latency.P50 != 2 || math.Abs(m.Latency.Max-3) > 0.005 || m.Connect.RatePerS != 4 || m.Messages.SendRatePerS != 3 {
		t.Fatalf("latency %+v, connect rate %v, send rate %v", m.Latency, m.Connect.RatePerS, m.Messages.SendRatePerS)
	}
}

// -procs spreads the users over child processes (this test binary,
// re-executed) and merges what they measured.
func TestMultiProcess(t *testing.T) {
	f := newFakeChat(t, func(f *fakeChat) { f.withClientID = true })
	cfg := testConfig(f)
	cfg.Users = 6
	cfg.Procs = 2
	cfg.Rate = 60
	res := run(t, cfg)
	m := res.Messages
	if !res.OK || res.Processes != 2 || len(res.Clients) != 2 || m.Sent != 60 || m.Answered != 60 || res.Latency.Count != 60 {
		t.Fatalf("ok=%v processes=%d clients=%+v %+v latency %+v", res.OK, res.Processes, res.Clients, m, res.Latency)
	}
	if res.Connect.Connected != 6 || res.Servers[0].Connected.WSConnections != 6 {
		t.Errorf("connected %d, server saw %d at the barrier", res.Connect.Connected, res.Servers[0].Connected.WSConnections)
	}
	f.mu.Lock()
	users := len(f.queries)
	f.mu.Unlock()
	if users != 6 {
		t.Errorf("%d distinct users connected, want 6", users)
	}
}

// A socket closed by the server reconnects; with -resume the new connection
// names the last answer seen: its cursor, or its id from a server that sends
// no cursors.
func TestReconnectWithResume(t *testing.T) {
	for _, tc := range []struct {
		name           string
		resume, cursor bool
	}{{"cursor", true, true}, {"response-id", true, false}, {"plain", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeChat(t, func(f *fakeChat) { f.closeFirstAt = 2; f.withCursor = tc.cursor })
			cfg := testConfig(f)
			cfg.Users = 2
			cfg.Rate, cfg.UserRate = 0, 10
			cfg.Duration = 1500 * time.Millisecond
			cfg.Drain = 500 * time.Millisecond
			cfg.Resume = tc.resume
			res := run(t, cfg)
			if res.Connect.Disconnects["close_1001"] != 2 || res.Connect.Reconnects < 2 {
				t.Fatalf("disconnects %v, reconnects %d", res.Connect.Disconnects, res.Connect.Reconnects)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			for _, u := range []string{"load-0", "load-1"} {
				qs := f.queries[u]
				if len(qs) < 2 {
					t.Fatalf("%s connected %d times", u, len(qs))
				}
				if qs[0].Has("resume") {
					t.Errorf("%s: first connection has resume=%q", u, qs[0].Get("resume"))
				}
				got := qs[1].Get("resume")
				if want := f.lastResp[u]; tc.resume && (got != want || want == "") {
					t.Errorf("%s: reconnected with resume=%q, want the last answer's %q", u, got, want)
				}
				if !tc.resume && qs[1].Has("resume") {
					t.Errorf("%s: resume=%q without -resume", u, got)
				}
			}
		})
	}
}

// -idle holds the sockets (answering pings) and sends nothing.
func TestIdle(t *testing.T) {
	f := newFakeChat(t, func(f *fakeChat) { f.pingEvery = 50 * time.Millisecond })
	cfg := testConfig(f)
	cfg.Users = 20
	cfg.Idle = true
	cfg.Duration = 400 * time.Millisecond
	res := run(t, cfg)
	if !res.OK || res.Mode != "idle" || res.Connect.Connected != 20 || res.Connect.PeakOpen != 20 || res.Messages.Sent != 0 || f.n.Load() != 0 {
		t.Fatalf("ok=%v mode=%s connect %+v sent %d", res.OK, res.Mode, res.Connect, res.Messages.Sent)
	}
	if f.pongs.Load() < 20 {
		t.Errorf("%d pongs from 20 sockets over 400 ms of 50 ms pings", f.pongs.Load())
	}
	if s := res.Servers[0]; s.Connected.WSConnections != 20 || s.End.WSConnections != 20 {
		t.Errorf("server connections at connected/end: %d/%d", s.Connected.WSConnections, s.End.WSConnections)
	}
}

// Refused connections are counted by status and fail the run beyond
// -max-connect-failures.
func TestConnectFailures(t *testing.T) {
	f := newFakeChat(t, func(f *fakeChat) {
		f.refuseUser = func(u string) int {
			if strings.HasSuffix(u, "3") {
				return 503
			}
			return 0
		}
	})
	cfg := testConfig(f)
	cfg.Users = 10
	cfg.Rate = 20
	cfg.Reconnect = false
	res := run(t, cfg)
	c := res.Connect
	if c.Attempts != 10 || c.Connected != 9 || c.Failed != 1 || c.Failures["http_503"] != 1 || res.OK {
		t.Fatalf("ok=%v connect %+v", res.OK, c)
	}
	if res.Messages.SkippedDisconnected == 0 || res.Messages.Lost != 0 {
		t.Errorf("messages %+v: the refused user's sends are skipped, not lost", res.Messages)
	}
	cfg.MaxConnectFailures = 1
	if res := run(t, cfg); !res.OK {
		t.Errorf("one failure within -max-connect-failures 1: %q", res.Problems)
	}

	cfg.URLs = []string{"ws://127.0.0.1:1"}
	cfg.MetricsURLs = nil
	cfg.Users = 2
	cfg.Duration = 100 * time.Millisecond
	res = run(t, cfg)
	if res.Connect.Failures["refused"] != 2 {
		t.Errorf("failures %v, want refused=2", res.Connect.Failures)
	}
}

func TestFlagsAndEnv(t *testing.T) {
	env := map[string]string{"LOADGEN_USERS": "7", "LOADGEN_URL": "ws://a:1,ws://b:2", "AUTH_SECRET": "s3cret", "LOADGEN_DURATION": "2m", "LOADGEN_RATE": "9"}
	cfg, err := ParseFlags([]string{"-rate", "50", "-source-ips", "127.0.0.2", "-source-ips", "127.0.0.3"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Users != 7 || len(cfg.URLs) != 2 || cfg.Secret != "s3cret" || cfg.Duration != 2*time.Minute || cfg.Rate != 50 || len(cfg.SourceIPs) != 2 {
		t.Fatalf("%+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	env["LOADGEN_USERS"] = "many"
	if _, err := ParseFlags(nil, func(k string) string { return env[k] }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "LOADGEN_USERS") {
		t.Errorf("bad env value: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-url", "ws://x:1", "-secret", "s", "-users", "3"}, "exactly one of -rate"},
		{[]string{"-url", "ws://x:1", "-secret", "s", "-rate", "1", "-user-rate", "1"}, "exactly one of -rate"},
		{[]string{"-url", "wss://x:1", "-secret", "s", "-rate", "1"}, "TLS"},
		{[]string{"-url", "ws://x:1", "-rate", "1"}, "-secret"},
		{[]string{"-url", "ws://x:1", "-secret", "s", "-idle", "-rate", "1"}, "-idle"},
		{[]string{"-url", "ws://x:1", "-secret", "s", "-rate", "1", "-users", "2", "-procs", "3"}, "-procs"},
		{[]string{"-url", "ws://x:1", "-secret", "s", "-rate", "1", "-user-prefix", "a b"}, "-user-prefix"},
	} {
		cfg, err := ParseFlags(tc.args, func(string) string { return "" }, &bytes.Buffer{})
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

// A configuration that cannot fit this machine is refused with the fix.
func TestLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URLs = []string{"ws://127.0.0.1:8080"}
	cfg.Users = 50000
	err := cfg.checkLimits(20000, 28232)
	if err == nil || !strings.Contains(err.Error(), "use -procs 3 or more") || !strings.Contains(err.Error(), "RLIMIT_NOFILE") {
		t.Fatalf("50000 users in one process: %v", err)
	}
	cfg.Procs = 3
	err = cfg.checkLimits(20000, 28232)
	if err == nil || !strings.Contains(err.Error(), "-source-ips with 2 or more") {
		t.Fatalf("50000 sockets from one address: %v", err)
	}
	cfg.SourceIPs = []string{"127.0.0.2", "127.0.0.3"}
	if err := cfg.checkLimits(20000, 28232); err != nil {
		t.Fatal(err)
	}
	cfg.URLs = append(cfg.URLs, "ws://127.0.0.1:8081")
	cfg.SourceIPs = nil
	if err := cfg.checkLimits(20000, 28232); err != nil {
		t.Fatalf("two destinations share the load: %v", err)
	}
}

type recorder struct {
	msgs   []string
	closed string
}

func (r *recorder) onMessage(_ *wsConn, data []byte, _ time.Time) {
	r.msgs = append(r.msgs, string(data))
}
func (r *recorder) onClosed(_ *wsConn, reason string) { r.closed = reason }

func serverFrameBytes(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// The frame parser reassembles frames split anywhere and fragmented
// messages of every length encoding.
func TestFrameParser(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 70000)
	mid := bytes.Repeat([]byte("y"), 300)
	var stream []byte
	stream = append(stream, serverFrameBytes(true, opText, []byte("hello"))...)
	stream = append(stream, serverFrameBytes(true, opText, mid)...)
	stream = append(stream, serverFrameBytes(false, opText, long[:40000])...)
	stream = append(stream, serverFrameBytes(true, opPong, nil)...) // control frames may interleave
	stream = append(stream, serverFrameBytes(true, opContinuation, long[40000:])...)
	stream = append(stream, serverFrameBytes(true, opText, nil)...)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		rec := &recorder{}
		c := &wsConn{h: rec}
		rest := stream
		for len(rest) > 0 {
			n := min(len(rest), 1+rng.IntN(1000))
			chunk := append([]byte(nil), rest[:n]...)
			c.feed(chunk, time.Now())
			rest = rest[n:]
		}
		if len(rec.msgs) != 4 || rec.msgs[0] != "hello" || rec.msgs[1] != string(mid) || rec.msgs[2] != string(long) || rec.msgs[3] != "" || rec.closed != "" {
			t.Fatalf("got %d messages (closed %q)", len(rec.msgs), rec.closed)
		}
		if len(c.rbuf) != 0 {
			t.Fatalf("%d bytes left over", len(c.rbuf))
		}
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.5475456e+07
go_goroutines 99
go_goroutines_other 5
chat_ws_connections{service="websocket-server",weird="a}b \"c\""} 12 1712345678000
chat_ws_connections{service="other"} 3
`
	s, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if s != (ServerSample{RSSBytes: 35475456, Goroutines: 99, WSConnections: 15}) {
		t.Fatalf("%+v", s)
	}
	if _, err := parseMetrics(strings.NewReader("up 1\n")); err == nil {
		t.Error("a scrape without the metrics is not an error")
	}
}
