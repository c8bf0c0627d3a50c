package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// SchemaVersion is the version of the JSON result.
const SchemaVersion = 1

// Result is what a run measured; it is also what a worker process hands its
// parent, histograms included, so results merge exactly.
type Result struct {
	Schema    int       `json:"schema"`
	RunID     string    `json:"run_id"`
	Mode      string    `json:"mode"` // "messages" or "idle"
	StartedAt time.Time `json:"started_at"`
	Processes int       `json:"processes"`
	Config    RunConfig `json:"config"`

	Phases   Phases       `json:"phases"`
	Connect  ConnectStats `json:"connect"`
	Messages MessageStats `json:"messages"`

	Latency        Summary `json:"latency_ms"`         // send → response received
	AckLatency     Summary `json:"ack_latency_ms"`     // send → ack received
	ScheduleLag    Summary `json:"schedule_lag_ms"`    // scheduled send time → actual send
	ConnectLatency Summary `json:"connect_latency_ms"` // TCP connect + handshake

	Servers []ServerStats `json:"servers"`
	Clients []ClientStats `json:"clients"`

	Histograms Histograms `json:"histograms"`

	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}

// RunConfig is the configuration a result was measured with (no secret).
type RunConfig struct {
	URLs               []string `json:"urls"`
	Metrics            []string `json:"metrics"`
	Users              int      `json:"users"`
	UserPrefix         string   `json:"user_prefix"`
	RampPerS           float64  `json:"ramp_per_s"`
	RatePerS           float64  `json:"rate_per_s"` // total target message rate
	UserRatePerS       float64  `json:"user_rate_per_s"`
	Duration           string   `json:"duration"`
	MessageSize        int      `json:"message_size"`
	Drain              string   `json:"drain"`
	Idle               bool     `json:"idle"`
	Resume             bool     `json:"resume"`
	Reconnect          bool     `json:"reconnect"`
	Procs              int      `json:"procs"`
	SourceIPs          []string `json:"source_ips"`
	MaxConnectFailures int64    `json:"max_connect_failures"`
}

func runConfigOf(c Config) RunConfig {
	rc := RunConfig{
		URLs: c.URLs, Metrics: c.MetricsURLs, Users: c.Users, UserPrefix: c.UserPrefix, RampPerS: c.Ramp,
		RatePerS: c.messageRate(), UserRatePerS: c.messageRate() / float64(max(1, c.Users)),
		Duration: c.Duration.String(), MessageSize: c.MessageSize, Drain: c.Drain.String(), Idle: c.Idle, Resume: c.Resume,
		Reconnect: c.Reconnect, Procs: c.Procs, SourceIPs: c.SourceIPs, MaxConnectFailures: c.MaxConnectFailures,
	}
	for _, p := range []*[]string{&rc.URLs, &rc.Metrics, &rc.SourceIPs} {
		if *p == nil {
			*p = []string{}
		}
	}
	return rc
}

// Phases are the wall-clock lengths of the run's phases in seconds.
type Phases struct {
	RampS  float64 `json:"ramp_s"`
	SendS  float64 `json:"send_s"` // the hold time with -idle
	DrainS float64 `json:"drain_s"`
	CloseS float64 `json:"close_s"` // closing every socket
	TotalS float64 `json:"total_s"`
}

// ConnectStats covers the sockets.
type ConnectStats struct {
	Users     int              `json:"users"`
	Attempts  int64            `json:"attempts"`  // initial connects
	Connected int64            `json:"connected"` // initial connects that succeeded
	Failed    int64            `json:"failed"`    // initial connects that failed
	Failures  map[string]int64 `json:"failures"`  // by reason: http_<status>, refused, timeout, no_local_port, …
	RatePerS  float64          `json:"rate_per_s"`
	PeakOpen  int64            `json:"peak_open"`

	Disconnects       map[string]int64 `json:"disconnects"` // during the run, by reason: close_<code>, eof, reset, …
	Reconnects        int64            `json:"reconnects"`
	ReconnectFailures map[string]int64 `json:"reconnect_failures"`
}

// MessageStats covers the messages.
type MessageStats struct {
	TargetRatePerS      float64          `json:"target_rate_per_s"`
	Scheduled           int64            `json:"scheduled"`
	Sent                int64            `json:"sent"`
	SkippedDisconnected int64            `json:"skipped_disconnected"` // scheduled while the user had no socket
	SendErrors          int64            `json:"send_errors"`
	Acked               int64            `json:"acked"`
	Answered            int64            `json:"answered"`         // by a response
	Errored             int64            `json:"errored"`          // by an error frame naming the message
	AnsweredUnacked     int64            `json:"answered_unacked"` // answered, but their ack never came
	ErrorFrames         int64            `json:"error_frames"`
	Errors              map[string]int64 `json:"errors"` // error frames by message text
	Lost                int64            `json:"lost"`   // sent, no answer by the drain deadline
	LostAcked           int64            `json:"lost_acked"`
	LostUnacked         int64            `json:"lost_unacked"`
	Duplicated          int64            `json:"duplicated"` // a response id, or a second answer to a message, seen again
	Unmatched           int64            `json:"unmatched"`  // answers to nothing this run sent
	SendRatePerS        float64          `json:"send_rate_per_s"`
	AnswerRatePerS      float64          `json:"answer_rate_per_s"`
}

// ServerStats is one -metrics target scraped before, during and after.
type ServerStats struct {
	URL          string        `json:"url"`
	Before       *ServerSample `json:"before"`
	Connected    *ServerSample `json:"connected"` // all users connected, before sending
	Peak         *ServerSample `json:"peak"`      // maxima of every scrape
	End          *ServerSample `json:"end"`       // after the drain, sockets still open
	After        *ServerSample `json:"after"`     // sockets closed, after -settle
	Scrapes      int           `json:"scrapes"`
	ScrapeErrors int           `json:"scrape_errors"`
	LastError    string        `json:"last_error,omitempty"`
	// RSSPerConnection is (connected − before) RSS over (connected − before)
	// connections: the server memory one socket costs.
	RSSPerConnection float64 `json:"rss_per_connection_bytes"`
}

// ServerSample is one scrape of the metrics the report uses.
type ServerSample struct {
	RSSBytes      int64 `json:"rss_bytes"`      // process_resident_memory_bytes
	Goroutines    int64 `json:"goroutines"`     // go_goroutines
	WSConnections int64 `json:"ws_connections"` // chat_ws_connections
}

// ClientStats is one load generator process.
type ClientStats struct {
	Process          int     `json:"process"`
	Users            int     `json:"users"`
	PeakSockets      int64   `json:"peak_sockets"`
	PeakRSSBytes     int64   `json:"peak_rss_bytes"`
	PeakGoroutines   int64   `json:"peak_goroutines"`
	RSSPerSocketByte float64 `json:"rss_per_socket_bytes"`
}

// Histograms are the exact distributions behind the summaries (µs).
type Histograms struct {
	Latency        HistData `json:"latency"`
	AckLatency     HistData `json:"ack_latency"`
	ScheduleLag    HistData `json:"schedule_lag"`
	ConnectLatency HistData `json:"connect_latency"`
}

func addMap(dst *map[string]int64, src map[string]int64) {
	if *dst == nil {
		*dst = map[string]int64{}
	}
	for k, v := range src {
		(*dst)[k] += v
	}
}

// mergeResults adds up the results of the worker processes of one run.
func mergeResults(parts []*Result) (*Result, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("no results to merge")
	}
	m := &Result{Schema: SchemaVersion, RunID: parts[0].RunID, Mode: parts[0].Mode, StartedAt: parts[0].StartedAt, Config: parts[0].Config}
	var lat, ack, lag, conn []HistData
	for _, p := range parts {
		if p.StartedAt.Before(m.StartedAt) {
			m.StartedAt = p.StartedAt
		}
		m.Processes += max(1, p.Processes)
		m.Phases.RampS = max(m.Phases.RampS, p.Phases.RampS)
		m.Phases.SendS = max(m.Phases.SendS, p.Phases.SendS)
		m.Phases.DrainS = max(m.Phases.DrainS, p.Phases.DrainS)
		m.Phases.CloseS = max(m.Phases.CloseS, p.Phases.CloseS)
		m.Phases.TotalS = max(m.Phases.TotalS, p.Phases.TotalS)

		c, pc := &m.Connect, p.Connect
		c.Users += pc.Users
		c.Attempts += pc.Attempts
		c.Connected += pc.Connected
		c.Failed += pc.Failed
		c.PeakOpen += pc.PeakOpen
		c.Reconnects += pc.Reconnects
		addMap(&c.Failures, pc.Failures)
		addMap(&c.Disconnects, pc.Disconnects)
		addMap(&c.ReconnectFailures, pc.ReconnectFailures)

		ms, pm := &m.Messages, p.Messages
		ms.TargetRatePerS += pm.TargetRatePerS
		ms.Scheduled += pm.Scheduled
		ms.Sent += pm.Sent
		ms.SkippedDisconnected += pm.SkippedDisconnected
		ms.SendErrors += pm.SendErrors
		ms.Acked += pm.Acked
		ms.Answered += pm.Answered
		ms.Errored += pm.Errored
		ms.AnsweredUnacked += pm.AnsweredUnacked
		ms.ErrorFrames += pm.ErrorFrames
		ms.Lost += pm.Lost
		ms.LostAcked += pm.LostAcked
		ms.LostUnacked += pm.LostUnacked
		ms.Duplicated += pm.Duplicated
		ms.Unmatched += pm.Unmatched
		addMap(&ms.Errors, pm.Errors)

		m.Clients = append(m.Clients, p.Clients...)
		lat = append(lat, p.Histograms.Latency)
		ack = append(ack, p.Histograms.AckLatency)
		lag = append(lag, p.Histograms.ScheduleLag)
		conn = append(conn, p.Histograms.ConnectLatency)
	}
	var err error
	for _, x := range []struct {
		dst   *HistData
		parts []HistData
	}{{&m.Histograms.Latency, lat}, {&m.Histograms.AckLatency, ack}, {&m.Histograms.ScheduleLag, lag}, {&m.Histograms.ConnectLatency, conn}} {
		if *x.dst, err = mergeHists(x.parts...); err != nil {
			return nil, err
		}
	}
	m.finish()
	return m, nil
}

// finish derives the summaries and rates from the counters and histograms.
func (r *Result) finish() {
	r.Latency = summarize(r.Histograms.Latency)
	r.AckLatency = summarize(r.Histograms.AckLatency)
	r.ScheduleLag = summarize(r.Histograms.ScheduleLag)
	r.ConnectLatency = summarize(r.Histograms.ConnectLatency)
	for _, mp := range []*map[string]int64{&r.Connect.Failures, &r.Connect.Disconnects, &r.Connect.ReconnectFailures, &r.Messages.Errors} {
		if *mp == nil {
			*mp = map[string]int64{}
		}
	}
	r.Connect.RatePerS = 0
	if r.Phases.RampS > 0 {
		r.Connect.RatePerS = float64(r.Connect.Connected) / r.Phases.RampS
	}
	r.Messages.SendRatePerS, r.Messages.AnswerRatePerS = 0, 0
	if r.Phases.SendS > 0 {
		r.Messages.SendRatePerS = float64(r.Messages.Sent) / r.Phases.SendS
	}
	if t := r.Phases.SendS + r.Phases.DrainS; t > 0 {
		r.Messages.AnswerRatePerS = float64(r.Messages.Answered) / t
	}
	for i := range r.Clients {
		if c := &r.Clients[i]; c.PeakSockets > 0 {
			c.RSSPerSocketByte = float64(c.PeakRSSBytes) / float64(c.PeakSockets)
		}
	}
	if r.Clients == nil {
		r.Clients = []ClientStats{}
	}
	if r.Servers == nil {
		r.Servers = []ServerStats{}
	}
}

// evaluate decides OK and lists the problems: anything lost or duplicated,
// or more initial connect failures than allowed.
func (r *Result) evaluate(maxConnectFailures int64) {
	r.Problems = []string{}
	if r.Messages.Lost > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d messages lost (no answer within -drain: %d acked, %d never acked)", r.Messages.Lost, r.Messages.LostAcked, r.Messages.LostUnacked))
	}
	if r.Messages.Duplicated > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d answers duplicated", r.Messages.Duplicated))
	}
	if r.Connect.Failed > maxConnectFailures {
		r.Problems = append(r.Problems, fmt.Sprintf("%d initial connects failed (allowed: %d): %s", r.Connect.Failed, maxConnectFailures, formatCounts(r.Connect.Failures)))
	}
	r.OK = len(r.Problems) == 0
}

func formatCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func sampleCells(s *ServerSample) string {
	if s == nil {
		return "-\t-\t-"
	}
	return fmt.Sprintf("%s\t%d\t%d", mib(s.RSSBytes), s.Goroutines, s.WSConnections)
}

// WriteTable prints the human-readable report.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cfg := r.Config
	load := fmt.Sprintf("%.0f msg/s target", r.Messages.TargetRatePerS)
	if r.Mode == "idle" {
		load = "idle sockets"
	}
	fmt.Fprintf(tw, "run %s\t%d users over %d process(es), %s, %s, message %d B, drain %s\n", r.RunID, cfg.Users, r.Processes, load, cfg.Duration, cfg.MessageSize, cfg.Drain)
	fmt.Fprintf(tw, "phases\tramp %.1fs  send %.1fs  drain %.1fs  close %.1fs  total %.1fs\n", r.Phases.RampS, r.Phases.SendS, r.Phases.DrainS, r.Phases.CloseS, r.Phases.TotalS)
	c := r.Connect
	fmt.Fprintf(tw, "connect\t%d/%d connected (%.0f/s), %d failed [%s], peak open %d\n", c.Connected, c.Attempts, c.RatePerS, c.Failed, formatCounts(c.Failures), c.PeakOpen)
	fmt.Fprintf(tw, "reconnect\t%d reconnects, failures [%s], disconnects [%s]\n", c.Reconnects, formatCounts(c.ReconnectFailures), formatCounts(c.Disconnects))
	if r.Mode != "idle" {
		m := r.Messages
		fmt.Fprintf(tw, "messages\tscheduled %d  sent %d (%.1f/s)  skipped %d  send errors %d\n", m.Scheduled, m.Sent, m.SendRatePerS, m.SkippedDisconnected, m.SendErrors)
		fmt.Fprintf(tw, "answers\tacked %d  answered %d (%.1f/s)  errored %d  error frames %d [%s]\n", m.Acked, m.Answered, m.AnswerRatePerS, m.Errored, m.ErrorFrames, formatCounts(m.Errors))
		fmt.Fprintf(tw, "integrity\tlost %d (acked %d, unacked %d)  duplicated %d  unmatched %d  answered without ack %d\n", m.Lost, m.LostAcked, m.LostUnacked, m.Duplicated, m.Unmatched, m.AnsweredUnacked)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "ms\tcount\tp50\tp90\tp99\tp99.9\tmax\tmean")
	rows := []struct {
		name string
		s    Summary
	}{{"latency (send→response)", r.Latency}, {"ack latency", r.AckLatency}, {"schedule lag", r.ScheduleLag}, {"connect", r.ConnectLatency}}
	for _, row := range rows {
		if r.Mode == "idle" && row.name != "connect" {
			continue
		}
		s := row.s
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\n", row.name, s.Count, s.P50, s.P90, s.P99, s.P999, s.Max, s.Mean)
	}
	if len(r.Servers) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "server\twhen\trss\tgoroutines\tws conns")
		for _, s := range r.Servers {
			for _, row := range []struct {
				when string
				smp  *ServerSample
			}{{"before", s.Before}, {"connected", s.Connected}, {"peak", s.Peak}, {"end", s.End}, {"after", s.After}} {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", s.URL, row.when, sampleCells(row.smp))
			}
			if s.RSSPerConnection > 0 {
				fmt.Fprintf(tw, "%s\tper conn\t%.1f KiB\t\t\n", s.URL, s.RSSPerConnection/1024)
			}
		}
	}
	for _, s := range r.Servers {
		if s.ScrapeErrors > 0 {
			fmt.Fprintf(tw, "scrape errors\t%s: %d of %d (last: %s)\n", s.URL, s.ScrapeErrors, s.Scrapes, s.LastError)
		}
	}
	if len(r.Clients) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "client process\tusers\tpeak sockets\tpeak rss\tgoroutines\trss/socket")
		for _, cl := range r.Clients {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%.1f KiB\n", cl.Process, cl.Users, cl.PeakSockets, mib(cl.PeakRSSBytes), cl.PeakGoroutines, cl.RSSPerSocketByte/1024)
		}
	}
	fmt.Fprintln(tw)
	if r.OK {
		fmt.Fprintln(tw, "result\tOK: nothing lost, nothing duplicated")
	} else {
		fmt.Fprintln(tw, "result\tFAILED: "+strings.Join(r.Problems, "; "))
	}
	_ = tw.Flush()
}
