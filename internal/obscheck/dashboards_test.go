package obscheck

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// The dashboards the issue asks for.
var wantDashboards = []string{"overview.json", "websocket-server.json", "ai-consumer.json", "message-relay.json"}

// sampleCorrelationID stands for $correlation_id when links are decoded.
const sampleCorrelationID = "corr-0123.abc:9"

// Where a correlation id must lead, with $correlation_id substituted.
var (
	wantTraceQL  = fmt.Sprintf(`{ span.correlation_id = "%s" }`, sampleCorrelationID)
	wantLogQuery = fmt.Sprintf(`{service=~".+"} | json | correlation_id="%s"`, sampleCorrelationID)
)

func TestDashboardsModel(t *testing.T) {
	dashboards := loadDashboards(t)
	provisioned := provisionedDatasources(t)
	for _, uid := range []string{"prometheus", "tempo", "loki"} {
		if _, ok := provisioned[uid]; !ok {
			t.Errorf("datasource uid %q is not provisioned", uid)
		}
	}

	have := map[string]bool{}
	uids := map[string]string{}
	for _, d := range dashboards {
		have[d.file] = true
		if d.Title == "" {
			t.Errorf("%s: no title", d.file)
		}
		if d.UID == "" {
			t.Errorf("%s: no uid", d.file)
		} else if other, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q is also used by %s", d.file, d.UID, other)
		} else {
			uids[d.UID] = d.file
		}
		if len(d.UID) > 40 {
			t.Errorf("%s: uid %q is longer than Grafana's 40 characters", d.file, d.UID)
		}
		if d.Schema == 0 {
			t.Errorf("%s: no schemaVersion", d.file)
		}
		panels := d.allPanels()
		if len(panels) == 0 {
			t.Errorf("%s: no panels", d.file)
		}
		ids := map[int]bool{}
		for _, p := range panels {
			where := fmt.Sprintf("%s: panel %d %q", d.file, p.ID, p.Title)
			if p.ID == 0 || ids[p.ID] {
				t.Errorf("%s: missing or duplicate panel id", where)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if p.Title == "" || p.Type == "" {
				t.Errorf("%s: needs a title and a type", where)
			}
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: no gridPos", where)
			}
			checkDatasource(t, where, p.Datasource, provisioned)
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", where)
			}
			for _, tg := range p.Targets {
				tw := where + " target " + tg.RefID
				ds := p.Datasource
				if tg.Datasource != nil {
					checkDatasource(t, tw, tg.Datasource, provisioned)
					ds = tg.Datasource
				}
				if ds == nil {
					continue
				}
				switch provisioned[ds.UID] {
				case "prometheus", "loki":
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s: empty expr", tw)
					}
				case "tempo":
					if strings.TrimSpace(tg.Query) == "" {
						t.Errorf("%s: empty query", tw)
					}
				}
				// Latency graphs show exemplars (trace ids) next to the line.
				if p.Type == "timeseries" && isPrometheus(ds) && strings.Contains(tg.Expr, "histogram_quantile") && !tg.Exemplar {
					t.Errorf("%s: a latency query without exemplars", tw)
				}
			}
			checkCorrelationLinks(t, where+" links", append(append([]gLink(nil), p.Links...), p.FieldConfig.Defaults.Links...))
		}

		v := d.variable("correlation_id")
		if v == nil {
			t.Errorf("%s: no correlation_id variable", d.file)
		} else if v.Type != "textbox" {
			t.Errorf("%s: correlation_id is a %s variable, want a textbox", d.file, v.Type)
		}
		checkCorrelationLinks(t, d.file+": dashboard links", d.Links)
	}
	for _, f := range wantDashboards {
		if !have[f] {
			t.Errorf("dashboards/%s is missing", f)
		}
	}
}

func checkDatasource(t *testing.T, where string, ds *dsRef, provisioned map[string]string) {
	t.Helper()
	switch {
	case ds == nil:
		t.Errorf("%s: no datasource", where)
	case ds.legacy != "":
		t.Errorf("%s: datasource given by name %q; use {\"type\", \"uid\"}", where, ds.legacy)
	default:
		typ, ok := provisioned[ds.UID]
		if !ok {
			t.Errorf("%s: datasource uid %q is not provisioned in observability/grafana/provisioning/datasources", where, ds.UID)
		} else if ds.Type != "" && ds.Type != typ {
			t.Errorf("%s: datasource %q has type %q, provisioned as %q", where, ds.UID, ds.Type, typ)
		}
	}
}

// explorePane is one pane of Grafana's Explore URL state (?panes=...).
type explorePane struct {
	Datasource string `json:"datasource"`
	Queries    []struct {
		Datasource *dsRef `json:"datasource"`
		QueryType  string `json:"queryType"`
		Query      string `json:"query"`
		Expr       string `json:"expr"`
	} `json:"queries"`
}

// decodeExploreLink substitutes the correlation_id variable in a link URL
// and returns the Explore panes it opens.
func decodeExploreLink(raw string) (map[string]explorePane, error) {
	s, err := substituteVars(raw, map[string]string{"correlation_id": url.QueryEscape(sampleCorrelationID)})
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Path != "/explore" {
		return nil, nil
	}
	var panes map[string]explorePane
	if err := json.Unmarshal([]byte(u.Query().Get("panes")), &panes); err != nil {
		return nil, fmt.Errorf("panes: %w", err)
	}
	return panes, nil
}

// checkCorrelationLinks wants, among links, one that opens Tempo's TraceQL
// search for the correlation id and one that opens its Loki logs.
func checkCorrelationLinks(t *testing.T, where string, links []gLink) {
	t.Helper()
	trace, logs := false, false
	for _, l := range links {
		panes, err := decodeExploreLink(l.URL)
		if err != nil {
			t.Errorf("%s: link %q: %v", where, l.Title, err)
			continue
		}
		for _, p := range panes {
			for _, q := range p.Queries {
				ds := p.Datasource
				if q.Datasource != nil && q.Datasource.UID != "" {
					ds = q.Datasource.UID
				}
				switch {
				case ds == "tempo" && q.QueryType == "traceql" && q.Query == wantTraceQL:
					trace = true
				case ds == "loki" && q.Expr == wantLogQuery:
					logs = true
				}
			}
		}
	}
	if !trace {
		t.Errorf("%s: none opens Tempo (uid tempo) with the TraceQL query %s", where, wantTraceQL)
	}
	if !logs {
		t.Errorf("%s: none opens Loki (uid loki) with the query %s", where, wantLogQuery)
	}
}

// TestOverviewDashboardContent checks that the overview shows what the
// issue lists: messages/s, error rate, end-to-end latency p50/p90/p99,
// sockets per instance, consumer lag, LLM latency, errors and tokens.
func TestOverviewDashboardContent(t *testing.T) {
	var overview *gDashboard
	for _, d := range loadDashboards(t) {
		if d.file == "overview.json" {
			overview = d
		}
	}
	if overview == nil {
		t.Fatal("no dashboards/overview.json")
	}
	var all strings.Builder
	for _, p := range overview.allPanels() {
		for _, tg := range p.Targets {
			all.WriteString(tg.Expr + "\n")
		}
	}
	text := all.String()
	for _, want := range []string{
		"chat_gateway_messages_accepted_total",
		"service:chat_error_ratio:rate5m",
		"histogram_quantile(0.5, sum by (le) (rate(chat_end_to_end_latency_seconds_bucket",
		"histogram_quantile(0.9, sum by (le) (rate(chat_end_to_end_latency_seconds_bucket",
		"histogram_quantile(0.99, sum by (le) (rate(chat_end_to_end_latency_seconds_bucket",
		"sum by (instance) (chat_ws_connections)",
		"chat_kafka_group_lag",
		"chat_llm_request_seconds_bucket",
		"chat_llm_requests_total",
		"chat_llm_tokens_total",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("overview.json has no query with %q", want)
		}
	}
	// One dashboard per service, tagged with its name.
	for _, d := range loadDashboards(t) {
		svc := strings.TrimSuffix(d.file, filepath.Ext(d.file))
		if svc == "overview" {
			continue
		}
		tagged := false
		for _, tag := range d.Tags {
			tagged = tagged || tag == svc
		}
		if !tagged {
			t.Errorf("%s: not tagged %q", d.file, svc)
		}
	}
}
