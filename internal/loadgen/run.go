package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatrelay/chat/internal/auth"
)

// Phases at which a worker waits for its coordinator, which scrapes the
// servers meanwhile.
const (
	phaseBefore    = "before"
	phaseConnected = "connected" // every user connected (or failed), nothing sent yet
	phaseDrained   = "drained"   // sending and draining done, sockets still open
	phaseAfter     = "after"
)

// barrier is called at phaseConnected and phaseDrained and returns when the
// run may go on.
type barrier func(phase string)

// workerConfig is the share of a run one process executes.
type workerConfig struct {
	Config    Config `json:"config"`
	Secret    string `json:"secret"`
	RunID     string `json:"run_id"`
	Index     int    `json:"index"`
	UserStart int    `json:"user_start"`
	UserCount int    `json:"user_count"`
}

// counterMap counts by a bounded set of labels.
type counterMap struct {
	mu sync.Mutex
	m  map[string]int64
}

const maxLabels = 100

func newCounterMap() *counterMap { return &counterMap{m: map[string]int64{}} }

func (c *counterMap) add(k string) {
	c.mu.Lock()
	if _, ok := c.m[k]; !ok && len(c.m) >= maxLabels {
		k = "<other>"
	}
	c.m[k]++
	c.mu.Unlock()
}

func (c *counterMap) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

var errClosing = errors.New("run is ending")

type sendJob struct {
	u   *user
	due time.Time
}

// runner is one process's share of a run.
type runner struct {
	cfg    Config
	wc     workerConfig
	runID  string
	secret []byte
	ttl    time.Duration
	log    io.Writer

	msgRate, rampRate float64

	users   []*user
	pollers []*poller

	dialCtx    context.Context
	dialCancel context.CancelFunc
	stop       chan struct{}
	closing    atomic.Bool
	bgMu       sync.Mutex
	bg         sync.WaitGroup

	attempts, connected, failed, reconnects  atomic.Int64
	open, peakOpen, peakGoroutines           atomic.Int64
	scheduled, sent, skipped, sendErrors     atomic.Int64
	acked, answered, errored, errorFrames    atomic.Int64
	duplicated, unmatched, pendingTotal      atomic.Int64
	failures, reconnectFailures, disconnects *counterMap
	errorsByMsg                              *counterMap
	latency, ackLatency, lag, connLatency    *hist
}

func newRunner(wc workerConfig, log io.Writer) (*runner, error) {
	cfg := wc.Config
	r := &runner{
		cfg: cfg, wc: wc, runID: wc.RunID, secret: []byte(wc.Secret), ttl: cfg.tokenTTL(), log: log,
		stop:     make(chan struct{}),
		failures: newCounterMap(), reconnectFailures: newCounterMap(), disconnects: newCounterMap(), errorsByMsg: newCounterMap(),
		latency: newHist(), ackLatency: newHist(), lag: newHist(), connLatency: newHist(),
	}
	share := float64(wc.UserCount) / float64(cfg.Users)
	r.msgRate = cfg.messageRate() * share
	r.rampRate = cfg.Ramp * share
	r.dialCtx, r.dialCancel = context.WithCancel(context.Background())

	var eps []*endpoint
	for _, raw := range cfg.URLs {
		ep, err := parseEndpoint(raw)
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	var locals []*net.TCPAddr
	for _, s := range cfg.SourceIPs {
		locals = append(locals, &net.TCPAddr{IP: net.ParseIP(s)})
	}
	for range max(2, runtime.GOMAXPROCS(0)) {
		p, err := newPoller()
		if err != nil {
			r.closePollers()
			return nil, fmt.Errorf("epoll: %w", err)
		}
		r.pollers = append(r.pollers, p)
	}
	r.users = make([]*user, wc.UserCount)
	for i := range r.users {
		g := wc.UserStart + i
		u := &user{r: r, idx: g, id: cfg.UserPrefix + strconv.Itoa(g), ep: eps[g%len(eps)], p: r.pollers[i%len(r.pollers)]}
		if len(locals) > 0 {
			u.local = locals[(g/len(eps))%len(locals)]
		}
		r.users[i] = u
	}
	return r, nil
}

func (r *runner) closePollers() {
	for _, p := range r.pollers {
		p.close()
	}
}

var errClosedEarly = errors.New("server closed the socket during the handshake")

// connect opens a socket for u and attaches it; on reconnect with -resume
// it passes the id of the last response seen.
func (r *runner) connect(u *user, reconnect bool) (*wsConn, error) {
	tok, err := auth.Mint(r.secret, u.id, r.ttl)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("userid", u.id)
	q.Set("token", tok)
	if reconnect && r.cfg.Resume {
		u.mu.Lock()
		last := u.lastResp
		u.mu.Unlock()
		if last != "" {
			q.Set("resume", last)
		}
	}
	uri := u.ep.path + "?"
	if u.ep.query != "" {
		uri += u.ep.query + "&"
	}
	uri += q.Encode()
	start := time.Now()
	nc, leftover, err := dialWS(r.dialCtx, u.ep, uri, u.local, r.cfg.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	r.connLatency.record(time.Since(start))
	c, err := newWSConn(nc, u)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	if len(leftover) > 0 {
		c.feed(leftover, time.Now())
		if c.closed.Load() {
			return nil, errClosedEarly
		}
	}
	u.mu.Lock()
	if r.closing.Load() {
		u.mu.Unlock()
		c.closeQuiet()
		return nil, errClosing
	}
	if err := u.p.add(c); err != nil {
		u.mu.Unlock()
		c.shutdown("", false)
		return nil, err
	}
	u.conn, u.reconnecting = c, false
	u.mu.Unlock()
	n := r.open.Add(1)
	for {
		p := r.peakOpen.Load()
		if n <= p || r.peakOpen.CompareAndSwap(p, n) {
			break
		}
	}
	return c, nil
}

// sleepUntil waits for t; false if ctx ended first.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// ramp connects every user at the ramp rate and waits for every attempt.
func (r *runner) ramp(ctx context.Context) {
	sem := make(chan struct{}, r.cfg.DialConcurrency)
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	for i, u := range r.users {
		if !sleepUntil(ctx, timer, start.Add(scheduleOffset(int64(i), r.rampRate))) {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.attempts.Add(1)
			if _, err := r.connect(u, false); err != nil {
				r.failed.Add(1)
				r.failures.add(dialReason(err))
				if r.cfg.Reconnect && !r.closing.Load() {
					u.startReconnect()
				}
				return
			}
			r.connected.Add(1)
		}()
	}
	wg.Wait()
}

// scheduleOffset is when the k-th event of an open-model schedule at rate
// per second is due, from the start.
func scheduleOffset(k int64, rate float64) time.Duration {
	return time.Duration(float64(k) * float64(time.Second) / rate)
}

// sendPhase runs the open-model schedule: message k is due at
// start + k/rate and goes to user k mod n. Sends are handed to -senders
// goroutines and never wait for answers; a late send shows as schedule lag.
func (r *runner) sendPhase(ctx context.Context) {
	if r.msgRate <= 0 || len(r.users) == 0 {
		return
	}
	jobs := make(chan sendJob, 8192)
	var wg sync.WaitGroup
	for range r.cfg.Senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := range jobs {
				buf = j.u.send(j.due, buf)
			}
		}()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	end := start.Add(r.cfg.Duration)
	n := int64(len(r.users))
	for k := int64(0); ; k++ {
		due := start.Add(scheduleOffset(k, r.msgRate))
		if !due.Before(end) || !sleepUntil(ctx, timer, due) {
			break
		}
		select {
		case jobs <- sendJob{u: r.users[k%n], due: due}:
			r.scheduled.Add(1)
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
}

// drain waits until every message sent is answered or the deadline passes.
func (r *runner) drain(deadline time.Time) {
	for r.pendingTotal.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// closeAll ends the run: no more reconnects, every socket closed normally.
func (r *runner) closeAll() {
	r.bgMu.Lock()
	r.closing.Store(true)
	close(r.stop)
	r.bgMu.Unlock()
	r.dialCancel()
	var wg sync.WaitGroup
	workers := 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(r.users); i += workers {
				u := r.users[i]
				u.mu.Lock()
				c := u.conn
				u.conn = nil
				u.mu.Unlock()
				if c != nil {
					c.closeQuiet()
					r.open.Add(-1)
				}
			}
		}()
	}
	wg.Wait()
	r.bg.Wait()
	r.closePollers()
}

// monitor samples goroutines every second and prints progress lines.
func (r *runner) monitor(stop <-chan struct{}, prefix string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start, last := time.Now(), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if g := int64(runtime.NumGoroutine()); g > r.peakGoroutines.Load() {
				r.peakGoroutines.Store(g)
			}
			if r.cfg.Progress > 0 && now.Sub(last) >= r.cfg.Progress-10*time.Millisecond {
				last = now
				fmt.Fprintf(r.log, "%s%5.0fs open=%d sent=%d acked=%d answered=%d pending=%d errors=%d dup=%d skipped=%d\n",
					prefix, now.Sub(start).Seconds(), r.open.Load(), r.sent.Load(), r.acked.Load(), r.answered.Load(),
					r.pendingTotal.Load(), r.errorFrames.Load(), r.duplicated.Load(), r.skipped.Load())
			}
		}
	}
}

// peakRSS is this process's peak resident set size (VmHWM).
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:")); ok {
			f := bytes.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// runWorker executes wc in this process: ramp, (barrier) send or hold,
// drain, (barrier) close.
func runWorker(ctx context.Context, wc workerConfig, wait barrier, log io.Writer, prefix string) (*Result, error) {
	if need := wc.UserCount + filesReserved; need > fileLimit() {
		return nil, fmt.Errorf("%d sockets in one process need about %d open files, the limit is %d: use more -procs", wc.UserCount, need, fileLimit())
	}
	r, err := newRunner(wc, log)
	if err != nil {
		return nil, err
	}
	cfg := wc.Config
	res := &Result{Schema: SchemaVersion, RunID: wc.RunID, Mode: "messages", StartedAt: time.Now().UTC(), Processes: 1}
	if cfg.Idle {
		res.Mode = "idle"
	}
	monStop := make(chan struct{})
	monDone := make(chan struct{})
	go func() { defer close(monDone); r.monitor(monStop, prefix) }()

	t0 := time.Now()
	r.ramp(ctx)
	res.Phases.RampS = time.Since(t0).Seconds()
	wait(phaseConnected)

	t1 := time.Now()
	if cfg.Idle {
		timer := time.NewTimer(time.Hour)
		sleepUntil(ctx, timer, t1.Add(cfg.Duration))
		timer.Stop()
	} else {
		r.sendPhase(ctx)
	}
	res.Phases.SendS = time.Since(t1).Seconds()
	t2 := time.Now()
	if !cfg.Idle {
		r.drain(t2.Add(cfg.Drain))
	}
	res.Phases.DrainS = time.Since(t2).Seconds()
	wait(phaseDrained)
	t3 := time.Now()
	r.closeAll()
	res.Phases.CloseS = time.Since(t3).Seconds()
	close(monStop)
	<-monDone
	res.Phases.TotalS = time.Since(t0).Seconds()

	// Whatever is still pending is lost; answers never matched are unmatched.
	var lostAcked, lostUnacked, orphans, neverAcked int64
	for _, u := range r.users {
		u.mu.Lock()
		for _, p := range u.pending {
			if p.acked {
				lostAcked++
			} else {
				lostUnacked++
			}
		}
		orphans += int64(len(u.orphans))
		neverAcked += int64(len(u.awaitAck))
		u.mu.Unlock()
	}
	res.Connect = ConnectStats{
		Users: wc.UserCount, Attempts: r.attempts.Load(), Connected: r.connected.Load(), Failed: r.failed.Load(),
		Failures: r.failures.snapshot(), PeakOpen: r.peakOpen.Load(), Disconnects: r.disconnects.snapshot(),
		Reconnects: r.reconnects.Load(), ReconnectFailures: r.reconnectFailures.snapshot(),
	}
	res.Messages = MessageStats{
		TargetRatePerS: r.msgRate, Scheduled: r.scheduled.Load(), Sent: r.sent.Load(), SkippedDisconnected: r.skipped.Load(),
		SendErrors: r.sendErrors.Load(), Acked: r.acked.Load(), Answered: r.answered.Load(), Errored: r.errored.Load(),
		ErrorFrames: r.errorFrames.Load(), Errors: r.errorsByMsg.snapshot(),
		Lost: lostAcked + lostUnacked, LostAcked: lostAcked, LostUnacked: lostUnacked,
		Duplicated: r.duplicated.Load(), Unmatched: r.unmatched.Load() + orphans, AnsweredUnacked: neverAcked,
	}
	res.Clients = []ClientStats{{
		Process: wc.Index, Users: wc.UserCount, PeakSockets: r.peakOpen.Load(), PeakRSSBytes: peakRSS(), PeakGoroutines: r.peakGoroutines.Load(),
	}}
	res.Histograms = Histograms{Latency: r.latency.data(), AckLatency: r.ackLatency.data(), ScheduleLag: r.lag.data(), ConnectLatency: r.connLatency.data()}
	res.Config = runConfigOf(cfg)
	res.finish()
	return res, nil
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "lg" + hex.EncodeToString(b)
}

// Run executes a whole run: scrapes the servers, runs the users in this
// process or spread over -procs child processes, and returns the merged,
// evaluated result. log receives progress lines.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	runID := newRunID()
	sc := newScraper(cfg.MetricsURLs)
	sc.sample(phaseBefore)
	stopScrape := sc.every(cfg.ScrapeInterval)
	wait := func(phase string) { sc.sample(phase) }

	var res *Result
	var err error
	if cfg.Procs == 1 {
		res, err = runWorker(ctx, workerConfig{Config: cfg, Secret: cfg.Secret, RunID: runID, UserCount: cfg.Users}, wait, log, "loadgen: ")
	} else {
		res, err = runProcesses(ctx, cfg, runID, wait, log)
	}
	stopScrape()
	if err != nil {
		return nil, err
	}
	if len(cfg.MetricsURLs) > 0 {
		sc.settle(time.Now().Add(cfg.Settle))
		sc.sample(phaseAfter)
	}
	res.Servers = sc.results()
	res.Config = runConfigOf(cfg)
	res.finish()
	res.evaluate(cfg.MaxConnectFailures)
	return res, nil
}
