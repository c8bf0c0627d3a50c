package obscheck

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v2"

	"github.com/chatrelay/chat/internal/testinfra"
)

const (
	// The alerts fired for real once the ai-consumer is killed: its group's
	// lag from the broker's view, and its group without members.
	e2eLagAlert  = "KafkaConsumerLagHigh"
	e2eDownAlert = "KafkaConsumerGroupDown"
	// The recording rules both read (alerts/recording.yml).
	e2eRecordingGroup = "chat-kafka-group-lag"
	// The test copies of the rules: the real expressions with this lag
	// threshold and this `for`, so they fire within seconds, not minutes.
	e2eThreshold = 5
	e2eFor       = 2 * time.Second
	// How long the webhook may take to receive both pages after the kill.
	e2eAlertTimeout = 90 * time.Second
	// Kafka's (and kfake's) smallest session timeout: a killed member is
	// dropped from its group this long after its last heartbeat.
	e2eSessionTimeout = "6s"
)

// deriveTestRule returns a copy of the real alerting rule with every
// comparison against a number literal set to threshold and `for` set to
// forDur; everything else (expression, labels, annotations) stays as is.
func deriveTestRule(t *testing.T, r rulefmt.Rule, threshold float64, forDur time.Duration) rulefmt.Rule {
	t.Helper()
	e, err := promqlParser.ParseExpr(r.Expr)
	if err != nil {
		t.Fatalf("%s: %v", r.Alert, err)
	}
	changed := 0
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		be, ok := n.(*parser.BinaryExpr)
		if !ok || !be.Op.IsComparisonOperator() {
			return nil
		}
		if num, ok := be.RHS.(*parser.NumberLiteral); ok {
			if num.Val <= threshold {
				t.Fatalf("%s: real threshold %v is not above the test threshold %v", r.Alert, num.Val, threshold)
			}
			num.Val = threshold
			changed++
		}
		return nil
	})
	if changed != 1 {
		t.Fatalf("%s: want exactly one `<expr> <cmp> <number>` threshold in %q, found %d", r.Alert, r.Expr, changed)
	}
	r.Expr = e.String()
	return deriveFor(t, r, forDur)
}

// deriveFor returns a copy of the real alerting rule with `for` set to
// forDur, for a rule whose thresholds are already what a test needs (lag
// above 0, no member).
func deriveFor(t *testing.T, r rulefmt.Rule, forDur time.Duration) rulefmt.Rule {
	t.Helper()
	if time.Duration(r.For) <= forDur {
		t.Fatalf("%s: real for %v is not longer than the test's %v", r.Alert, r.For, forDur)
	}
	r.For = model.Duration(forDur)
	return r
}

var amGrouping = regexp.MustCompile(`(?m)^(\s*)(group_wait|group_interval):\s*\S+\s*$`)

// webhookNotification is Alertmanager's webhook payload (version 4).
type webhookNotification struct {
	Receiver string         `json:"receiver"`
	Status   string         `json:"status"`
	Alerts   []webhookAlert `json:"alerts"`
	path     string
}

type webhookAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// TestConsumerLagAlertEndToEnd kills the consumer and waits for the page:
// websocket-server, ai-consumer and message-relay as separate processes on
// one broker, a real prometheus scraping the three every second with test
// copies of KafkaConsumerLagHigh and KafkaConsumerGroupDown (and the real
// recording rules they read), a real Alertmanager with the repo's routing,
// and the pager webhook as an httptest server. Once the system answers, the
// ai-consumer is killed with SIGKILL and not restarted while messages keep
// coming: both pages must still reach the webhook, from lag the gateway and
// the relay measure from the broker's view of the dead consumer's group.
func TestConsumerLagAlertEndToEnd(t *testing.T) {
	t.Parallel()
	promBin := testinfra.ToolBinary(t, "prometheus")
	promtool := testinfra.ToolBinary(t, "promtool")
	amBin := testinfra.ToolBinary(t, "alertmanager")
	start := time.Now()

	dir := t.TempDir()
	realRules := writeE2ERules(t, dir, promtool)

	notifications, amAddr := startPager(t, dir, amBin)

	sys := startKillableSystem(t)
	promAddr := testinfra.FreeAddr(t)
	writeFile(t, filepath.Join(dir, "prometheus.yml"), e2ePrometheusConfig(amAddr, sys.ops))
	prom := startProc(t, "prometheus", promBin, []string{
		"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "prometheus-data"),
		"--web.listen-address=" + promAddr,
	}, nil)
	waitHTTP(t, prom, "http://"+promAddr+"/-/ready", 30*time.Second)
	promQuery := func(q string) string { return "http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q) }

	clients := sys.healthy(t, promQuery)
	expectNoPage(t, notifications, realRules)
	sys.ai.Kill() // SIGKILL; nothing restarts it
	killed := time.Now()
	t.Logf("ai-consumer killed %s after the start", killed.Sub(start).Round(time.Millisecond))
	sent, sendErrs := keepSending(t, clients)

	debug := func() {
		t.Logf("%d messages sent after the kill, %d send errors", sent.Load(), sendErrs.Load())
		for _, q := range []string{"group_topic:chat_kafka_group_lag:sum", "group:chat_kafka_group_members:max", "chat_kafka_group_state == 1", "up"} {
			debugQuery(t, "prometheus "+q, promQuery(q))
		}
		debugQuery(t, "prometheus alerts", "http://"+promAddr+"/api/v1/alerts")
		debugQuery(t, "alertmanager alerts", "http://"+amAddr+"/api/v2/alerts")
	}
	waitPages(t, notifications, realRules, killed, debug)
	t.Logf("%d messages sent after the kill; %s in total", sent.Load(), time.Since(start).Round(time.Millisecond))
	lagFromOthers(t, promQuery)
}

// startPager starts the pager (and ticket) webhooks and an Alertmanager
// with the real routing that sends to them.
func startPager(t *testing.T, dir, amBin string) (<-chan webhookNotification, string) {
	t.Helper()
	// The pager (and ticket) webhooks.
	notifications := make(chan webhookNotification, 256)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n webhookNotification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n.path = r.URL.Path
		select {
		case notifications <- n:
		default:
		}
	}))
	t.Cleanup(hook.Close)

	// Alertmanager with the real routing; receivers point at the webhook
	// server (/pager, /ticket) and groups flush after 1s instead of 10-30s.
	amCfg := alertmanagerConfigWithURLs(t, func(file string) string {
		return hook.URL + "/" + strings.TrimSuffix(file, "_webhook_url")
	})
	amCfg = amGrouping.ReplaceAllString(amCfg, "${1}${2}: 1s")
	writeFile(t, filepath.Join(dir, "alertmanager.yml"), amCfg)
	amAddr := testinfra.FreeAddr(t)
	am := startProc(t, "alertmanager", amBin, []string{
		"--config.file=" + filepath.Join(dir, "alertmanager.yml"),
		"--storage.path=" + filepath.Join(dir, "alertmanager-data"),
		"--web.listen-address=" + amAddr,
		"--cluster.listen-address=",
	}, nil)
	waitHTTP(t, am, "http://"+amAddr+"/-/ready", 30*time.Second)
	return notifications, amAddr
}

// writeE2ERules writes the test copies of the two alerts, with the
// recording rules they read, into dir/lag-rule.yml, checks it with
// promtool, and returns the real alerting rules.
func writeE2ERules(t *testing.T, dir, promtool string) []rulefmt.Rule {
	t.Helper()
	files := loadRuleFiles(t)
	lagReal, downReal := findAlert(t, files, e2eLagAlert), findAlert(t, files, e2eDownAlert)
	lag := deriveTestRule(t, lagReal, e2eThreshold, e2eFor)
	down := deriveFor(t, downReal, e2eFor)
	t.Logf("test rules: %s for %s; %s for %s", lag.Expr, time.Duration(lag.For), strings.Join(strings.Fields(down.Expr), " "), time.Duration(down.For))
	groups := rulefmt.RuleGroups{Groups: []rulefmt.RuleGroup{
		findRuleGroup(t, files, e2eRecordingGroup),
		{Name: "obscheck-e2e", Rules: []rulefmt.Rule{lag, down}},
	}}
	ruleYAML, err := yaml.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "lag-rule.yml"), string(ruleYAML))
	if out, err := run(t, dir, time.Minute, promtool, "check", "rules", "lag-rule.yml"); err != nil {
		t.Fatalf("derived rule file does not check:\n%s\n%v\n%s", ruleYAML, err, out)
	}
	return []rulefmt.Rule{lagReal, downReal}
}

func findRuleGroup(t *testing.T, files []ruleFile, name string) rulefmt.RuleGroup {
	t.Helper()
	for _, f := range files {
		for _, g := range f.groups.Groups {
			if g.Name == name {
				return g
			}
		}
	}
	t.Fatalf("no rule group %s in alerts/*.yml", name)
	return rulefmt.RuleGroup{}
}

// e2ePrometheusConfig scrapes each service as the compose Prometheus does
// (one job per service), every second.
func e2ePrometheusConfig(amAddr string, ops map[string]string) string {
	var jobs, labels strings.Builder
	for _, job := range []string{"websocket-server", "ai-consumer", "message-relay"} {
		fmt.Fprintf(&jobs, "  - job_name: %s\n    static_configs:\n      - targets: [%q]\n", job, ops[job])
	}
	for k, v := range e2eExternalLabels {
		fmt.Fprintf(&labels, "    %s: %q\n", k, v)
	}
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
  external_labels:
%salerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
rule_files:
  - lag-rule.yml
scrape_configs:
%s`, labels.String(), amAddr, jobs.String())
}

// killableSystem is the three services as separate processes (the
// ai-consumer can be killed alone) on a kfake broker in the test and a
// redis-server.
type killableSystem struct {
	gateway *devstack // the gateway's addresses, for dialChat
	ai      *testinfra.Process
	ops     map[string]string // job → ops address
}

func startKillableSystem(t *testing.T) *killableSystem {
	t.Helper()
	kafka := testinfra.StartKafka(t, testinfra.WithPartitions(4))
	redis := testinfra.StartRedis(t)
	// Without the race detector, like the devstack these tests build: the
	// test is about alert timing on two shared cores, not about races.
	bin := testinfra.BuildServicesOpt(t, testinfra.WithRace(false))
	s := &killableSystem{ops: map[string]string{}}
	common := []string{
		"KAFKA_BOOTSTRAP_SERVERS=" + kafka.Bootstrap(), "KAFKA_TOPIC_PARTITIONS=4", "REDIS_URL=" + redis.URL(),
		"LOG_LEVEL=info", "KAFKA_LAG_INTERVAL=1s", "KAFKA_SESSION_TIMEOUT=" + e2eSessionTimeout,
		// The test sends faster than a person; limits have their own tests.
		"RATE_USER_MESSAGES_PER_MIN=0", "LIMIT_IP_CONNECTS_PER_MIN=0",
	}
	start := func(job, binary string, env ...string) *testinfra.Process {
		s.ops[job] = testinfra.FreeAddr(t)
		env = append(append(env, common...), "OPS_ADDR="+s.ops[job], "INSTANCE_ID="+job+"-1")
		return testinfra.StartProcessFrom(t, bin, job, binary, env, "http://"+s.ops[job]+"/readyz")
	}
	s.ai = start("ai-consumer", "ai-consumer", "LLM_OFFLINE=true")
	start("message-relay", "message-relay")
	s.gateway = &devstack{httpAddr: testinfra.FreeAddr(t), secret: devSecret}
	start("websocket-server", "websocket-server", "HTTP_ADDR="+s.gateway.httpAddr, "AUTH_SECRET="+devSecret)
	s.gateway.opsAddr = s.ops["websocket-server"]
	return s
}

// healthy connects three users, checks that each gets an answer, and waits
// until Prometheus sees the ai-consumer group's member in the gateway's and
// the relay's measurements.
func (s *killableSystem) healthy(t *testing.T, promQuery func(string) string) []*chatClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var clients []*chatClient
	for i := range 3 {
		c := dialChat(t, s.gateway, fmt.Sprintf("obscheck-lag-%d", i))
		if err := c.send("hello before the kill", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := c.waitFrame(ctx, "response"); err != nil {
			t.Fatalf("the system does not answer before the kill: %v", err)
		}
		clients = append(clients, c)
	}
	q := promQuery(`max by (group) (chat_kafka_group_members{group="ai-consumer", job=~"websocket-server|message-relay"}) == 1`)
	for {
		if body, err := httpGet(ctx, q); err == nil && strings.Contains(string(body), `"group":"ai-consumer"`) {
			return clients
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Prometheus never saw the ai-consumer's member through the other processes")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// keepSending makes each client send four messages a second until the test
// ends.
func keepSending(t *testing.T, clients []*chatClient) (sent, sendErrs *atomic.Int64) {
	sent, sendErrs = new(atomic.Int64), new(atomic.Int64)
	ctx, stopTraffic := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := c.send(fmt.Sprintf("are you there? #%d", i), ""); err != nil {
					sendErrs.Add(1)
					continue
				}
				sent.Add(1)
			}
		}()
	}
	t.Cleanup(func() { stopTraffic(); wg.Wait() })
	return sent, sendErrs
}

// expectNoPage fails if one of the alerts paged while the consumer was alive.
func expectNoPage(t *testing.T, notifications <-chan webhookNotification, real []rulefmt.Rule) {
	t.Helper()
	for {
		select {
		case n := <-notifications:
			for _, r := range real {
				if ok, _ := isPage(n, r); ok {
					t.Fatalf("%s paged while the ai-consumer was alive and answering", r.Alert)
				}
			}
		default:
			return
		}
	}
}

// waitPages waits until every one of real has paged for the ai-consumer's
// group, logging how long after the kill each arrived.
func waitPages(t *testing.T, notifications <-chan webhookNotification, real []rulefmt.Rule, killed time.Time, debug func()) {
	t.Helper()
	deadline := time.NewTimer(e2eAlertTimeout)
	defer deadline.Stop()
	pending := slices.Clone(real)
	for len(pending) > 0 {
		select {
		case n := <-notifications:
			i := slices.IndexFunc(pending, func(r rulefmt.Rule) bool { ok, _ := isPage(n, r); return ok })
			if i < 0 {
				t.Logf("webhook %s: not a page we wait for: receiver=%s status=%s alerts=%d", n.path, n.Receiver, n.Status, len(n.Alerts))
				continue
			}
			a := n.Alerts[slices.IndexFunc(n.Alerts, func(a webhookAlert) bool { return a.Labels["alertname"] == pending[i].Alert })]
			t.Logf("pager webhook received %s firing %s after the kill: %s", pending[i].Alert, time.Since(killed).Round(time.Millisecond), a.Annotations["summary"])
			pending = slices.Delete(pending, i, i+1)
		case <-deadline.C:
			for _, r := range pending {
				t.Errorf("no firing %s reached the pager webhook within %s of the kill", r.Alert, e2eAlertTimeout)
			}
			debug()
			t.FailNow()
		}
	}
}

// isPage reports whether n is the pager receiving real's alert firing for
// the ai-consumer's group, with the labels and annotations of the real rule.
func isPage(n webhookNotification, real rulefmt.Rule) (bool, string) {
	if n.path != "/pager" || n.Receiver != "pager" {
		return false, "not the pager receiver"
	}
	for _, a := range n.Alerts {
		l := a.Labels
		if a.Status != "firing" || l["alertname"] != real.Alert {
			continue
		}
		want := map[string]string{"group": "ai-consumer", "topic": "incoming_messages"}
		for k, v := range real.Labels {
			want[k] = v
		}
		for k, v := range want {
			if l[k] != v {
				return false, fmt.Sprintf("label %s=%q, want %q", k, l[k], v)
			}
		}
		for _, k := range []string{"runbook_url", "dashboard_url"} {
			if got, want := a.Annotations[k], withExternalLabels(real.Annotations[k]); got != want {
				return false, fmt.Sprintf("%s %q, want %q", k, got, want)
			}
		}
		if !strings.Contains(a.Annotations["summary"], "ai-consumer") {
			return false, "summary " + a.Annotations["summary"]
		}
		return true, ""
	}
	return false, "no firing " + real.Alert
}

// e2eExternalLabels are the test Prometheus's external labels, which the
// rules' link annotations start with (as the compose Prometheus's do).
var e2eExternalLabels = map[string]string{
	"runbook_base_url": "https://runbooks.example.org/chat",
	"grafana_url":      "https://grafana.example.org",
}

var externalLabelRef = regexp.MustCompile(`\{\{\s*\$externalLabels\.(\w+)\s*\}\}`)

// withExternalLabels is an annotation as Prometheus renders it with
// e2eExternalLabels (the rules' link annotations use nothing else).
func withExternalLabels(annotation string) string {
	return externalLabelRef.ReplaceAllStringFunc(annotation, func(ref string) string {
		return e2eExternalLabels[externalLabelRef.FindStringSubmatch(ref)[1]]
	})
}

// lagFromOthers checks that the lag the pages read came from processes
// that are not the killed consumer: the ai-consumer's own series are gone.
func lagFromOthers(t *testing.T, promQuery func(string) string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := httpGet(ctx, promQuery(`count by (job) (chat_kafka_group_lag{group="ai-consumer"})`))
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var jobs []string
	for _, r := range resp.Data.Result {
		jobs = append(jobs, r.Metric["job"])
	}
	slices.Sort(jobs)
	if !slices.Equal(jobs, []string{"message-relay", "websocket-server"}) {
		t.Errorf("the ai-consumer group's lag is measured by %v; want the gateway and the relay only (the consumer is dead)", jobs)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func debugQuery(t *testing.T, what, u string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := httpGet(ctx, u)
	if len(body) > 4000 {
		body = body[:4000]
	}
	t.Logf("%s: %v\n%s", what, err, body)
}
