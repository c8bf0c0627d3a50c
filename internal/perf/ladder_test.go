package perf

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/loadgen"
)

// rung is a ladder run at rate with the given outcome and 10 s of CPU in
// the send phase on each of two gateways and the relay.
func rung(rate float64, answered, lost int64, p99 float64) *runResult {
	res := &loadgen.Result{}
	res.Messages.Sent, res.Messages.Answered, res.Messages.Lost = 10000, answered, lost
	res.Latency.P50, res.Latency.P99 = 5, p99
	return &runResult{Ladder: true, Rate: rate, Result: res, Windows: map[string]cpuWindow{
		"send": {Seconds: 20, CPU: map[string]float64{"gw-1": 10, "gw-2": 10, "message-relay": 5},
			Switches: map[string]float64{"gw-1": 30000, "gw-2": 20000, "message-relay": 15000}, MachineSwitches: 90000},
		"after": {Seconds: 5, CPU: map[string]float64{"gw-1": 0, "gw-2": 0, "message-relay": 0},
			Switches: map[string]float64{"gw-1": 0, "gw-2": 0, "message-relay": 5000}, MachineSwitches: 10000},
	}}
}

// The ladder table names the knee where a rate first fails: p99 over
// 100 ms, or a message not answered.
func TestLadderKnee(t *testing.T) {
	cases := []struct {
		runs []*runResult
		knee string
	}{
		{[]*runResult{rung(500, 10000, 0, 8), rung(1000, 10000, 0, 40), rung(2000, 10000, 0, 300)}, "between 1000 and 2000 msg/s"},
		{[]*runResult{rung(500, 10000, 0, 8), rung(1000, 9990, 10, 40)}, "between 500 and 1000 msg/s"},
		{[]*runResult{rung(500, 10000, 0, 8), rung(1000, 10000, 0, 99)}, "above 1000 msg/s"},
		{[]*runResult{rung(500, 10000, 0, 150)}, "at or below 500 msg/s"},
	}
	for _, c := range cases {
		got := ladderTable(c.runs)
		if !strings.Contains(got, "Knee") || !strings.Contains(got, c.knee) {
			t.Errorf("want the knee %q in:\n%s", c.knee, got)
		}
	}
	// 20 s of gateway CPU (both) over 10,000 answers: 2 ms each.
	if got := ladderTable(cases[2].runs); !strings.Contains(got, "| 500 | 10000 | 10000 | 0 | 0 | 5.0 | 8.0 | 2.00 | 0.00 | 0.50 |") {
		t.Errorf("per-message CPU wrong:\n%s", got)
	}
	// loadgen exited before the send window's last sample: its share is
	// its whole CPU (exit status) less what it used while the sockets
	// opened. 2 s over 10,000 answers: 0.20 ms each.
	r := rung(500, 10000, 0, 8)
	r.LoadgenCPU = 2.5
	r.Windows["ramp"] = cpuWindow{Seconds: 1, CPU: map[string]float64{"loadgen": 0.5}, Switches: map[string]float64{}}
	if got := ladderTable([]*runResult{r}); !strings.Contains(got, "| 0.00 | 0.00 | 0.00 | 0.20 | 2.70 |") {
		t.Errorf("loadgen's share from its exit status wrong:\n%s", got)
	}
	// Switches the same way: 50,000 on the gateways, 20,000 on the relay,
	// 100,000 on the machine over 10,000 answers; loadgen's from its exit
	// status less the ramp's.
	r.LoadgenSwitches = 7000
	r.Windows["ramp"].Switches["loadgen"] = 2000
	if got := ladderTable([]*runResult{r}); !strings.Contains(got, "| 500 | 5.0 | 0.0 | 2.0 | 0.0 | 0.0 | 0.0 | 0.5 | 10.0 |") {
		t.Errorf("switches per message wrong:\n%s", got)
	}
	if ladderTable([]*runResult{{Name: "smoke"}}) != "" {
		t.Error("a table without ladder runs")
	}
}

// The switch counters read this machine's /proc: this process's threads
// switch as it sleeps, and the machine's count grows with them.
func TestSwitchCounters(t *testing.T) {
	_, m0 := machineStat()
	p0 := procSwitches(os.Getpid())
	for range 5 {
		time.Sleep(time.Millisecond)
	}
	_, m1 := machineStat()
	p1 := procSwitches(os.Getpid())
	if p0 <= 0 || p1 < p0+5 {
		t.Errorf("this process's switches %v then %v, want at least one per sleep", p0, p1)
	}
	if m0 <= 0 || m1 < m0+5 {
		t.Errorf("the machine's switches %v then %v, want at least this process's", m0, m1)
	}
	if procSwitches(-1) != 0 {
		t.Error("a process that is not there switched")
	}
}

// A service's wait for a CPU is read from its go_sched_latencies_seconds
// sum and count (the runtime's histogram, every label summed); a page
// without it is an error, so an older build's run shows none.
func TestSchedWaitReadsTheHistogram(t *testing.T) {
	page := "# TYPE go_sched_latencies_seconds histogram\n" +
		"go_sched_latencies_seconds_bucket{le=\"0.0009175039999999999\"} 7\n" +
		"go_sched_latencies_seconds_bucket{le=\"+Inf\"} 8\n" +
		"go_sched_latencies_seconds_sum 0.004\n" +
		"go_sched_latencies_seconds_count 8\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			_, _ = io.WriteString(w, page)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	got, err := schedWait(context.Background(), srv.URL)
	if err != nil || got != (schedTotals{sum: 0.004, count: 8}) {
		t.Fatalf("schedWait = %+v, %v", got, err)
	}
	page = "go_goroutines 5\n"
	if _, err := schedWait(context.Background(), srv.URL); err == nil {
		t.Fatal("a page without the histogram gave a wait")
	}
	if got := waitLine(map[string]float64{"relay": 0.9, "gw-1": 0.12}); got != "gw-1 0.120 ms, relay 0.900 ms" {
		t.Fatalf("waitLine = %q", got)
	}
}
