package obscheck

import (
	"bytes"
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// allExprs returns every PromQL expression of alerts/ and dashboards/ and
// the names the recording rules define.
func allExprs(t *testing.T) ([]exprSource, map[string]bool) {
	t.Helper()
	files := loadRuleFiles(t)
	exprs := ruleExprs(files)
	exprs = append(exprs, dashboardExprs(t, loadDashboards(t))...)
	if t.Failed() {
		t.FailNow()
	}
	return exprs, recordedNames(files)
}

// TestPromQLParses parses every expression with the PromQL parser of
// Prometheus 3 and checks that every selector names its metric.
func TestPromQLParses(t *testing.T) {
	exprs, _ := allExprs(t)
	if len(exprs) < 20 {
		t.Fatalf("found only %d expressions; is the extraction broken?", len(exprs))
	}
	for _, e := range exprs {
		parsed, err := promqlParser.ParseExpr(e.expr)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", e.where, e.expr, err)
			continue
		}
		for _, n := range metricNames(parsed) {
			if n == "" {
				t.Errorf("%s: %q has a selector without a metric name", e.where, e.expr)
			}
		}
	}
}

// TestPromQLMetricsExist checks that every metric named by a rule or a
// dashboard is a recording rule, a series Prometheus writes itself (up), or
// is exported by the services: it starts the devstack (all three services
// on one /metrics, told apart by the service label), drives some traffic so
// labelled series exist, and compares against the scraped names.
func TestPromQLMetricsExist(t *testing.T) {
	t.Parallel()
	exprs, recorded := allExprs(t)

	// name -> where it is used
	wanted := map[string][]string{}
	for _, e := range exprs {
		parsed, err := promqlParser.ParseExpr(e.expr)
		if err != nil {
			continue // TestPromQLParses reports it
		}
		for _, n := range metricNames(parsed) {
			if n == "" || recorded[n] || syntheticNames[n] {
				continue
			}
			wanted[n] = append(wanted[n], e.where)
		}
	}
	if len(wanted) == 0 {
		t.Fatal("no service metric is referenced; is the extraction broken?")
	}

	d := startDevstack(t)
	driveTraffic(t, d)

	// Some series appear a few seconds after traffic (the consumer lag gauge
	// is refreshed every 5s once partitions are assigned): poll.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var missing []string
	var exported map[string]bool
	for {
		names, err := scrapeNames(ctx, "http://"+d.opsAddr+"/metrics")
		if err != nil && exported != nil && ctx.Err() != nil {
			break // the wait ended mid-scrape: report from the last one
		}
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		exported = names
		missing = missing[:0]
		for n := range wanted {
			if !exported[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("metric %s is not exported by the services (nor a recording rule); used by:\n  %s", n, strings.Join(wanted[n], "\n  "))
	}
	t.Logf("%d referenced metric names checked against %d exported names", len(wanted), len(exported))
}

// driveTraffic sends a good message (and waits for its answer), an invalid
// JSON frame, a binary frame and an empty message, and tries a connection
// with a bad token.
func driveTraffic(t *testing.T, d *devstack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialChat(t, d, "obscheck-u1")
	if err := c.send("hello metrics", "obscheck-corr-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.waitFrame(ctx, "ack"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.waitFrame(ctx, "response"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		kind int
		data string
	}{
		{websocket.TextMessage, "this is not json"},
		{websocket.BinaryMessage, "\x00\x01"},
		{websocket.TextMessage, `{"type":"message","content":"","userid":"obscheck-u1"}`},
	} {
		if err := c.write(bad.kind, []byte(bad.data)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.waitFrame(ctx, "error"); err != nil {
			t.Fatal(err)
		}
	}
	// A refused handshake (unauthorized).
	resp, err := http.Get("http://" + d.httpAddr + "/ws?userid=intruder&token=not-a-token")
	if err == nil {
		_ = resp.Body.Close()
	}
}

// scrapeNames fetches a /metrics page in the text format and returns the
// sample names it holds: a counter or gauge by its name, a histogram by its
// _bucket, _sum and _count series, a summary by its name, _sum and _count.
func scrapeNames(ctx context.Context, url string) (map[string]bool, error) {
	body, err := httpGet(ctx, url)
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for name, f := range fams {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[name+"_bucket"] = true
			names[name+"_sum"] = true
			names[name+"_count"] = true
		case dto.MetricType_SUMMARY:
			names[name] = true
			names[name+"_sum"] = true
			names[name+"_count"] = true
		default:
			names[name] = true
		}
	}
	return names, nil
}
