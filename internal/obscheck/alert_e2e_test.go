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
	// The alert fired for real: consumer lag of a stalled ai-consumer.
	e2eAlert = "KafkaConsumerLagHigh"
	// The test copy of the rule: the real expression with this threshold
	// and this `for`, so it fires within seconds instead of 10 minutes.
	e2eThreshold = 5
	e2eFor       = 2 * time.Second
	// How long the webhook may take to receive the alert once traffic runs.
	e2eAlertTimeout = 90 * time.Second
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
	if time.Duration(r.For) <= forDur {
		t.Fatalf("%s: real for %v is not longer than the test's %v", r.Alert, r.For, forDur)
	}
	r.Expr = e.String()
	r.For = model.Duration(forDur)
	return r
}

var amGrouping = regexp.MustCompile(`(?m)^(\s*)(group_wait|group_interval):\s*\S+\s*$`)

// webhookNotification is Alertmanager's webhook payload (version 4).
type webhookNotification struct {
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
	path string
}

// TestConsumerLagAlertEndToEnd fires the consumer-lag alert for real: the
// devstack with a model that takes 10 minutes per answer (the ai-consumer
// stalls, so its lag grows with every message), a real prometheus scraping
// the devstack every second with a test copy of the rule, a real
// Alertmanager with the repo's routing, and the pager webhook as an
// httptest server. Messages keep coming while the consumer is stalled.
func TestConsumerLagAlertEndToEnd(t *testing.T) {
	t.Parallel()
	promBin := testinfra.RequireBinary(t, "prometheus")
	promtool := testinfra.RequireBinary(t, "promtool")
	amBin := alertmanagerBinary(t)
	start := time.Now()

	realRule := findAlert(t, loadRuleFiles(t), e2eAlert)
	rule := deriveTestRule(t, realRule, e2eThreshold, e2eFor)
	t.Logf("test rule: %s for %s (real: %s for %s)", rule.Expr, time.Duration(rule.For), realRule.Expr, time.Duration(realRule.For))

	dir := t.TempDir()
	ruleYAML, err := yaml.Marshal(rulefmt.RuleGroups{Groups: []rulefmt.RuleGroup{{Name: "obscheck-e2e", Rules: []rulefmt.Rule{rule}}}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "lag-rule.yml"), string(ruleYAML))
	if out, err := run(t, dir, time.Minute, promtool, "check", "rules", "lag-rule.yml"); err != nil {
		t.Fatalf("derived rule file does not check:\n%s\n%v\n%s", ruleYAML, err, out)
	}

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

	d := startDevstack(t, "LLM_OFFLINE_LATENCY=10m")

	promAddr := testinfra.FreeAddr(t)
	writeFile(t, filepath.Join(dir, "prometheus.yml"), fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
rule_files:
  - lag-rule.yml
scrape_configs:
  - job_name: devstack
    static_configs:
      - targets: [%q]
`, amAddr, d.opsAddr))
	prom := startProc(t, "prometheus", promBin, []string{
		"--config.file=" + filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path=" + filepath.Join(dir, "prometheus-data"),
		"--web.listen-address=" + promAddr,
	}, nil)
	waitHTTP(t, prom, "http://"+promAddr+"/-/ready", 30*time.Second)

	// Keep sending while the consumer is stalled.
	var clients []*chatClient
	for i := range 3 {
		clients = append(clients, dialChat(t, d, fmt.Sprintf("obscheck-lag-%d", i)))
	}
	var sent, sendErrs atomic.Int64
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

	deadline := time.NewTimer(e2eAlertTimeout)
	defer deadline.Stop()
	trafficStart := time.Now()
	for {
		select {
		case n := <-notifications:
			if ok, why := isLagPage(n, realRule); !ok {
				t.Logf("webhook %s: not the page we wait for (%s): receiver=%s status=%s alerts=%d", n.path, why, n.Receiver, n.Status, len(n.Alerts))
				continue
			}
			t.Logf("pager webhook received %s firing %v after %s of traffic (%d messages sent; %s in total)",
				e2eAlert, n.Alerts[0].Labels, time.Since(trafficStart).Round(time.Millisecond), sent.Load(), time.Since(start).Round(time.Millisecond))
			return
		case <-deadline.C:
			t.Errorf("no firing %s reached the pager webhook within %s (%d messages sent, %d send errors)", e2eAlert, e2eAlertTimeout, sent.Load(), sendErrs.Load())
			debugQuery(t, "prometheus lag", "http://"+promAddr+"/api/v1/query?query="+url.QueryEscape("chat_kafka_consumer_lag"))
			debugQuery(t, "prometheus alerts", "http://"+promAddr+"/api/v1/alerts")
			debugQuery(t, "prometheus targets", "http://"+promAddr+"/api/v1/targets")
			debugQuery(t, "alertmanager alerts", "http://"+amAddr+"/api/v2/alerts")
			t.FailNow()
		}
	}
}

// isLagPage reports whether n is the pager receiving the firing lag alert of
// the ai-consumer with the labels and annotations of the real rule.
func isLagPage(n webhookNotification, real rulefmt.Rule) (bool, string) {
	if n.path != "/pager" || n.Receiver != "pager" {
		return false, "not the pager receiver"
	}
	for _, a := range n.Alerts {
		l := a.Labels
		if a.Status != "firing" || l["alertname"] != e2eAlert {
			continue
		}
		want := map[string]string{"group": "ai-consumer", "topic": "incoming_messages", "service": "ai-consumer"}
		for k, v := range real.Labels {
			want[k] = v
		}
		for k, v := range want {
			if l[k] != v {
				return false, fmt.Sprintf("label %s=%q, want %q", k, l[k], v)
			}
		}
		if a.Annotations["runbook_url"] != real.Annotations["runbook_url"] {
			return false, "runbook_url " + a.Annotations["runbook_url"]
		}
		if !strings.Contains(a.Annotations["summary"], "ai-consumer") {
			return false, "summary " + a.Annotations["summary"]
		}
		return true, ""
	}
	return false, "no firing " + e2eAlert
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
