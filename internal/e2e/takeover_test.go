package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/fakeopenai"
	"github.com/chatrelay/chat/internal/testinfra"
)

// Takeover after an ai-consumer instance goes away (issue 13, "fast takeover
// after a crash"): real processes (websocket-server, ai-consumer,
// message-relay) on real redis-server, a kfake broker and the fake OpenAI
// API, with the SHIPPED Kafka settings — no KAFKA_SESSION_TIMEOUT override,
// because how long a dead member keeps its partitions is what is measured.
//
// The default run asserts the case every restart policy produces: kill -9,
// started again 2 s later, answers flow again within a few seconds of the
// restart. TAKEOVER_SCENARIOS=all also runs the other cases (SIGTERM and a
// restart, scale-up, scale-down, a crash nobody restarts, with one instance
// and with two) and logs the table that docs/takeover.md shows.

const (
	takeoverUsers    = 20
	takeoverInterval = 500 * time.Millisecond // per user: 40 msg/s in all
	takeoverPause    = 2 * time.Second        // a restart policy's delay
	takeoverSettle   = 6 * time.Second        // load kept after the event
	// The assertions, counted from the restart: the first answer within
	// issue 13's target, and every user answered again soon after (the last
	// users wait for the backlog of the outage to be worked off, on two
	// shared cores under -race). Before static membership both were ~43 s.
	takeoverFirstBound = 5 * time.Second
	takeoverEveryBound = 8 * time.Second
)

type takeoverSystem struct {
	t      *testing.T
	kafka  *testinfra.Kafka
	redis  *testinfra.Redis
	openai *fakeopenai.Server
	common []string
	ais    []*testinfra.Process
	aiOps  []string
	wsBase string
}

func startTakeoverSystem(t *testing.T) *takeoverSystem {
	s := &takeoverSystem{
		t:      t,
		redis:  testinfra.StartRedis(t),
		kafka:  testinfra.StartKafka(t, testinfra.WithPartitions(4)),
		openai: fakeopenai.Start(t, fakeopenai.WithAPIKey(testAPIKey)),
	}
	s.common = []string{
		"KAFKA_BOOTSTRAP_SERVERS=" + s.kafka.Bootstrap(), "KAFKA_TOPIC_PARTITIONS=4",
		"REDIS_URL=" + s.redis.URL(), "LOG_LEVEL=info",
		// The load sends faster than a person; limits have their own tests.
		"RATE_USER_MESSAGES_PER_MIN=0", "LIMIT_IP_CONNECTS_PER_MIN=0",
	}
	httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	testinfra.StartProcess(t, "websocket-server", "websocket-server", append([]string{
		"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + testSecret,
	}, s.common...), "http://"+opsAddr+"/readyz")
	s.wsBase = "ws://" + httpAddr
	relayOps := testinfra.FreeAddr(t)
	testinfra.StartProcess(t, "message-relay", "message-relay", append([]string{"OPS_ADDR=" + relayOps}, s.common...), "http://"+relayOps+"/readyz")
	// The first ai-consumer keeps the shipped INSTANCE_ID default, the host
	// name, which a restart keeps as compose and Kubernetes do.
	s.addAI()
	return s
}

// addAI starts one more ai-consumer. Instances after the first are given
// their own INSTANCE_ID (the documented knob): on one host they would all
// default to the same host name and fence each other.
func (s *takeoverSystem) addAI() *testinfra.Process {
	name, id := "ai-consumer", ""
	if n := len(s.ais); n > 0 {
		name = fmt.Sprintf("ai-consumer-%d", n+1)
		id = name
	}
	p, ops := s.startAI(name, id)
	s.ais, s.aiOps = append(s.ais, p), append(s.aiOps, ops)
	return p
}

// startAI starts an ai-consumer process with INSTANCE_ID id ("": the
// default) and returns it with its ops address.
func (s *takeoverSystem) startAI(name, id string) (*testinfra.Process, string) {
	ops := testinfra.FreeAddr(s.t)
	env := append([]string{
		"OPS_ADDR=" + ops, "OPENAI_API_KEY=" + testAPIKey, "OPENAI_BASE_URL=" + s.openai.BaseURL(), "OPENAI_MODEL=test-model",
	}, s.common...)
	if id != "" {
		env = append(env, "INSTANCE_ID="+id)
	}
	return testinfra.StartProcess(s.t, name, "ai-consumer", env, "http://"+ops+"/readyz"), ops
}

// checkDuplicateIsLoud starts a second ai-consumer with the first one's
// INSTANCE_ID (the host name): it fences the first, which must say so in
// its log, its counter and its readiness — and be ready and answering
// again once the duplicate stopped (and left the group).
func (s *takeoverSystem) checkDuplicateIsLoud(l *takeoverLoad) {
	t := s.t
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	dup, _ := s.startAI("ai-consumer-duplicate", host)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.ais[0].WaitLog(ctx, "kafka consumer fenced"); err != nil {
		t.Error(err)
	}
	ops := "http://" + s.aiOps[0]
	if code := readyStatus(t, ops); code != http.StatusServiceUnavailable {
		t.Errorf("fenced instance's /readyz: %d, want 503 (internal/kafka's tests check what it says)", code)
	}
	if n := scrapeSum(t, ops+"/metrics", "chat_kafka_group_fenced_total", `group="ai-consumer"`); n < 1 {
		t.Errorf("chat_kafka_group_fenced_total = %v, want at least 1", n)
	}
	dup.Stop()
	for code := 0; code != http.StatusOK && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		code = readyStatus(t, ops)
	}
	if ctx.Err() != nil {
		t.Error("the fenced instance is not ready again after the duplicate left")
	}
	if !l.waitAnswered(time.Now(), 30*time.Second) {
		t.Error("answers do not flow after the duplicate left")
	}
}

// readyStatus is the HTTP status of ops's /readyz.
func readyStatus(t *testing.T, ops string) int {
	t.Helper()
	resp, err := http.Get(ops + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// takeoverUser sends a message every takeoverInterval on one socket and
// notes when each was sent and answered.
type takeoverUser struct {
	c *testinfra.ChatClient

	mu       sync.Mutex
	sent     map[string]time.Time
	answered map[string]time.Time
	dups     int
	errs     int
}

type takeoverLoad struct {
	users   []*takeoverUser
	sending atomic.Bool
	wg      sync.WaitGroup
}

func startTakeoverLoad(t *testing.T, wsBase string) *takeoverLoad {
	l := &takeoverLoad{}
	l.sending.Store(true)
	for i := range takeoverUsers {
		c := testinfra.DialChat(t, wsBase, testSecret, fmt.Sprintf("takeover-u%02d", i))
		u := &takeoverUser{c: c, sent: map[string]time.Time{}, answered: map[string]time.Time{}}
		l.users = append(l.users, u)
		l.wg.Add(2)
		go func() { defer l.wg.Done(); u.send(&l.sending) }()
		go func() { defer l.wg.Done(); u.read() }()
	}
	t.Cleanup(func() {
		l.sending.Store(false)
		for _, u := range l.users {
			_ = u.c.Conn.Close()
		}
		l.wg.Wait()
	})
	return l
}

func (u *takeoverUser) send(sending *atomic.Bool) {
	for seq := 1; sending.Load(); seq++ {
		id := fmt.Sprintf("m%d", seq)
		u.mu.Lock()
		u.sent[id] = time.Now()
		u.mu.Unlock()
		if err := u.c.Send(fmt.Sprintf("%s says %d", u.c.UserID, seq), id); err != nil {
			return
		}
		time.Sleep(takeoverInterval)
	}
}

func (u *takeoverUser) read() {
	for {
		f, err := u.c.Next(time.Hour)
		if err != nil {
			return
		}
		if f.Type != "response" && f.Type != "error" {
			continue
		}
		u.mu.Lock()
		switch _, seen := u.answered[f.ClientID]; {
		case seen:
			u.dups++
		default:
			u.answered[f.ClientID] = time.Now()
		}
		if f.Type == "error" {
			u.errs++
		}
		u.mu.Unlock()
	}
}

// waitAnswered waits until every message sent before at is answered.
func (l *takeoverLoad) waitAnswered(at time.Time, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		pending := 0
		for _, u := range l.users {
			u.mu.Lock()
			for id, sent := range u.sent {
				if _, ok := u.answered[id]; !ok && sent.Before(at) {
					pending++
				}
			}
			u.mu.Unlock()
		}
		if pending == 0 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// takeoverResult is one scenario's numbers, measured from the event (the
// kill or signal) unless said otherwise, over the messages sent from the
// event to the end of the scenario's window.
type takeoverResult struct {
	name string
	// first is the first answer to any of them; everyUser is when the last
	// user got one again (per user, the first answer after the event).
	first, everyUser time.Duration
	// firstAfterRestart and afterRestart are first and everyUser counted
	// from the restart; only meaningful with a restart.
	firstAfterRestart, afterRestart time.Duration
	restarted                       bool
	p50, p99, max                   time.Duration // send→answer
	messages, unanswered            int
}

// measure reads the books for messages sent in [event, end].
func (l *takeoverLoad) measure(name string, event, restart, end time.Time) takeoverResult {
	r := takeoverResult{name: name, first: -1}
	var gaps []time.Duration
	for _, u := range l.users {
		u.mu.Lock()
		userFirst := time.Duration(-1)
		for id, sent := range u.sent {
			if sent.Before(event) || sent.After(end) {
				continue
			}
			r.messages++
			at, ok := u.answered[id]
			if !ok {
				r.unanswered++
				continue
			}
			gaps = append(gaps, at.Sub(sent))
			if d := at.Sub(event); userFirst < 0 || d < userFirst {
				userFirst = d
			}
		}
		u.mu.Unlock()
		r.everyUser = max(r.everyUser, userFirst)
		if userFirst >= 0 && (r.first < 0 || userFirst < r.first) {
			r.first = userFirst
		}
	}
	if r.restarted = !restart.IsZero(); r.restarted {
		r.firstAfterRestart = r.first - restart.Sub(event)
		r.afterRestart = r.everyUser - restart.Sub(event)
	}
	slices.Sort(gaps)
	if n := len(gaps); n > 0 {
		r.p50, r.p99, r.max = gaps[n/2], gaps[n*99/100], gaps[n-1]
	}
	return r
}

func (l *takeoverLoad) totals() (dups, errs int) {
	for _, u := range l.users {
		u.mu.Lock()
		dups, errs = dups+u.dups, errs+u.errs
		u.mu.Unlock()
	}
	return dups, errs
}

// scenario applies fault under the running load (fault returns when the
// restart, if any, was launched, or the zero time), keeps the load for
// takeoverSettle and waits for every message of the window to be answered.
func (s *takeoverSystem) scenario(l *takeoverLoad, name string, fault func() (restart time.Time)) takeoverResult {
	s.t.Helper()
	event := time.Now()
	restart := fault()
	time.Sleep(takeoverSettle)
	end := time.Now()
	if !l.waitAnswered(end, 2*time.Minute) {
		s.t.Errorf("%s: messages still unanswered 2 min after the scenario", name)
	}
	r := l.measure(name, event, restart, end)
	s.t.Logf("%s: %s", name, takeoverRow(r))
	return r
}

// killAndRestart is kill -9, then a restart after takeoverPause.
func killAndRestart(p *testinfra.Process) func() time.Time {
	return func() time.Time {
		p.Kill()
		time.Sleep(takeoverPause)
		at := time.Now()
		p.Start()
		return at
	}
}

func TestConsumerTakeoverAfterCrash(t *testing.T) {
	s := startTakeoverSystem(t)
	l := startTakeoverLoad(t, s.wsBase)
	warm := time.Now().Add(3 * time.Second)
	time.Sleep(time.Until(warm))
	if !l.waitAnswered(warm, 30*time.Second) {
		t.Fatal("the system does not answer before any fault")
	}

	r := s.scenario(l, "kill -9, restarted 2 s later", killAndRestart(s.ais[0]))
	if r.firstAfterRestart > takeoverFirstBound || r.afterRestart > takeoverEveryBound {
		t.Errorf("after kill -9 and a restart %s later: first answer %s and every user answered again %s after the restart; want at most %s and %s",
			takeoverPause, r.firstAfterRestart.Round(10*time.Millisecond), r.afterRestart.Round(10*time.Millisecond), takeoverFirstBound, takeoverEveryBound)
	}
	s.checkDuplicateIsLoud(l)
	results := []takeoverResult{r}
	if os.Getenv("TAKEOVER_SCENARIOS") == "all" {
		results = append(results, s.moreScenarios(l)...)
		t.Logf("takeover table (docs/takeover.md):\n%s", takeoverTable(results))
	}
	l.sending.Store(false)
	if !l.waitAnswered(time.Now(), time.Minute) {
		t.Error("messages unanswered at the end")
	}
	if dups, errs := l.totals(); dups != 0 || errs != 0 {
		t.Errorf("%d duplicated answers, %d error frames; want none", dups, errs)
	}
}

// moreScenarios measures the other ways an instance goes away or comes in,
// in an order that leaves the instances each one needs.
func (s *takeoverSystem) moreScenarios(l *takeoverLoad) []takeoverResult {
	signalAndRestart := func(p *testinfra.Process, sig syscall.Signal) func() time.Time {
		return func() time.Time {
			if !p.Signal(sig, 30*time.Second) {
				s.t.Errorf("%s did not stop within 30 s of %s", p.Name, sig)
			}
			time.Sleep(takeoverPause)
			at := time.Now()
			p.Start()
			return at
		}
	}
	scaleUp := func() time.Time { s.addAI(); return time.Time{} }
	var out []takeoverResult
	run := func(name string, fault func() time.Time) {
		out = append(out, s.scenario(l, name, fault))
	}
	run("SIGTERM, restarted 2 s later", signalAndRestart(s.ais[0], syscall.SIGTERM))
	run("scale-up: a second instance joins", scaleUp)
	run("2 instances: kill -9 one, restarted 2 s later", killAndRestart(s.ais[1]))
	run("2 instances: SIGTERM one, restarted 2 s later", signalAndRestart(s.ais[1], syscall.SIGTERM))
	run("2 instances: SIGTERM one for good (scale-down)", func() time.Time {
		s.ais[1].Stop()
		s.ais = s.ais[:1]
		return time.Time{}
	})
	s.addAI()
	time.Sleep(takeoverSettle) // let the group settle before the crash
	run("2 instances: kill -9 one, not restarted", func() time.Time {
		s.ais[1].Kill()
		return time.Time{}
	})
	return out
}

func takeoverTable(results []takeoverResult) string {
	var b strings.Builder
	b.WriteString("| scenario | first answer | every user answered again | send→answer p50 / p99 / max | messages (unanswered) |\n|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %s |\n", r.name, takeoverRow(r))
	}
	return b.String()
}

// takeoverRow is a result's cells, times from the event (and from the
// restart, if any).
func takeoverRow(r takeoverResult) string {
	r10 := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	first, every := r10(r.first), r10(r.everyUser)
	if r.restarted {
		first += fmt.Sprintf(" (%s after the restart)", r10(r.firstAfterRestart))
		every += fmt.Sprintf(" (%s after the restart)", r10(r.afterRestart))
	}
	return fmt.Sprintf("%s | %s | %s / %s / %s | %d (%d)", first, every, r10(r.p50), r10(r.p99), r10(r.max), r.messages, r.unanswered)
}
