package obscheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v2"
)

// ---- rules ----

// ruleFile is one parsed file of alerts/.
type ruleFile struct {
	path   string
	groups *rulefmt.RuleGroups
}

var promqlParser = parser.NewParser(parser.Options{})

// loadRuleFiles parses alerts/*.yml (not the tests) with Prometheus' own
// rule-file parser, which also validates every expression and template.
func loadRuleFiles(t testing.TB) []ruleFile {
	t.Helper()
	var out []ruleFile
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, f := range repoGlob(t, "alerts/*.yml") {
		rgs, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, promqlParser, logger)
		for _, err := range errs {
			t.Errorf("%s: %v", f, err)
		}
		if rgs == nil {
			continue
		}
		out = append(out, ruleFile{path: f, groups: rgs})
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// recordedNames are the series names the recording rules define.
func recordedNames(files []ruleFile) map[string]bool {
	out := map[string]bool{}
	for _, f := range files {
		for _, g := range f.groups.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					out[r.Record] = true
				}
			}
		}
	}
	return out
}

// findAlert returns the alerting rule named name.
func findAlert(t testing.TB, files []ruleFile, name string) rulefmt.Rule {
	t.Helper()
	for _, f := range files {
		for _, g := range f.groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == name {
					return r
				}
			}
		}
	}
	t.Fatalf("no alert %s in alerts/*.yml", name)
	return rulefmt.Rule{}
}

// ---- PromQL ----

// exprSource is one PromQL expression and where it was found.
type exprSource struct {
	where string
	expr  string
}

// ruleExprs returns the expression of every rule in alerts/*.yml.
func ruleExprs(files []ruleFile) []exprSource {
	var out []exprSource
	for _, f := range files {
		for _, g := range f.groups.Groups {
			for _, r := range g.Rules {
				name := r.Alert
				if name == "" {
					name = r.Record
				}
				out = append(out, exprSource{where: fmt.Sprintf("%s: group %s: %s", filepath.Base(f.path), g.Name, name), expr: r.Expr})
			}
		}
	}
	return out
}

// syntheticNames are series Prometheus itself writes for every target.
var syntheticNames = map[string]bool{
	"up":                                    true,
	"scrape_duration_seconds":               true,
	"scrape_samples_scraped":                true,
	"scrape_samples_post_metric_relabeling": true,
	"scrape_series_added":                   true,
}

// metricNames lists the metric names an expression selects. A selector
// without a metric name is reported as "" (the checks want every selector
// to name its metric).
func metricNames(e parser.Expr) []string {
	seen := map[string]bool{}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		seen[name] = true
		return nil
	})
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ---- Grafana dashboards ----

// dsRef is a panel's or target's datasource, {"type": ..., "uid": ...}. A
// legacy plain-string datasource (a name) is kept in legacy.
type dsRef struct {
	Type   string `json:"type"`
	UID    string `json:"uid"`
	legacy string
}

func (d *dsRef) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &d.legacy)
	}
	type plain dsRef
	return json.Unmarshal(b, (*plain)(d))
}

type gLink struct {
	Title string `json:"title"`
	Type  string `json:"type"`
	URL   string `json:"url"`
}

type gTarget struct {
	RefID      string `json:"refId"`
	Datasource *dsRef `json:"datasource"`
	Expr       string `json:"expr"`  // Prometheus, Loki
	Query      string `json:"query"` // Tempo TraceQL
	QueryType  string `json:"queryType"`
	Exemplar   bool   `json:"exemplar"`
}

type gPanel struct {
	ID          int       `json:"id"`
	Type        string    `json:"type"`
	Title       string    `json:"title"`
	Datasource  *dsRef    `json:"datasource"`
	Targets     []gTarget `json:"targets"`
	Panels      []gPanel  `json:"panels"` // collapsed rows
	Links       []gLink   `json:"links"`
	FieldConfig struct {
		Defaults struct {
			Links []gLink `json:"links"`
			Unit  string  `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	GridPos *struct {
		X, Y, W, H int
	} `json:"gridPos"`
}

type gVariable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Datasource *dsRef          `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
}

// gDashboard is the part of Grafana's dashboard model the checks read.
type gDashboard struct {
	file       string
	UID        string   `json:"uid"`
	Title      string   `json:"title"`
	Tags       []string `json:"tags"`
	Schema     int      `json:"schemaVersion"`
	Panels     []gPanel `json:"panels"`
	Links      []gLink  `json:"links"`
	Templating struct {
		List []gVariable `json:"list"`
	} `json:"templating"`
}

// allPanels flattens rows.
func (d *gDashboard) allPanels() []gPanel {
	var out []gPanel
	var walk func([]gPanel)
	walk = func(ps []gPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func (d *gDashboard) variable(name string) *gVariable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

// loadDashboards decodes every dashboards/*.json strictly as JSON (one
// value, no trailing data) into the dashboard model.
func loadDashboards(t testing.TB) []*gDashboard {
	t.Helper()
	var out []*gDashboard
	for _, f := range repoGlob(t, "dashboards/*.json") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Errorf("%s: not valid JSON", f)
			continue
		}
		d := &gDashboard{file: filepath.Base(f)}
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(d); err != nil {
			t.Errorf("%s: not a dashboard model: %v", f, err)
			continue
		}
		out = append(out, d)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// Values Grafana's built-in variables are replaced with before parsing.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__interval_ms":   "60000",
	"__range":         "1h",
	"__range_s":       "3600",
	"__range_ms":      "3600000",
}

// A variable reference: ${name}, ${name:format}, $name or [[name]].
var grafanaVarRef = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// substituteVars replaces Grafana variables in s: built-ins by sensible
// durations, the dashboard's own variables by vars[name]. Unknown variables
// are an error.
func substituteVars(s string, vars map[string]string) (string, error) {
	var unknown []string
	out := grafanaVarRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := grafanaVarRef.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		if v, ok := grafanaBuiltins[name]; ok {
			return v
		}
		if v, ok := vars[name]; ok {
			return v
		}
		unknown = append(unknown, name)
		return m
	})
	if len(unknown) > 0 {
		return out, fmt.Errorf("unknown Grafana variable(s) %s", strings.Join(unknown, ", "))
	}
	return out, nil
}

// sampleVarValue is what a dashboard variable stands for in a parsed query.
const sampleVarValue = "x"

func dashboardVars(d *gDashboard) map[string]string {
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = sampleVarValue
	}
	return vars
}

func isPrometheus(ds *dsRef) bool { return ds != nil && ds.UID == "prometheus" }

// variableQuery returns the text of a query variable's query (a string or
// the {"query": ...} object of newer Grafana versions).
func variableQuery(v gVariable) string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil && s != "" {
		return s
	}
	var obj struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &obj) == nil && obj.Query != "" {
		return obj.Query
	}
	return v.Definition
}

var (
	labelValuesWithSelector = regexp.MustCompile(`^\s*label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	queryResult             = regexp.MustCompile(`^\s*query_result\((.+)\)\s*$`)
)

// dashboardExprs returns every PromQL expression of the dashboards: the expr
// of every target on the Prometheus datasource and the selector or query of
// every Prometheus query variable, with Grafana variables substituted.
func dashboardExprs(t testing.TB, dashboards []*gDashboard) []exprSource {
	t.Helper()
	var out []exprSource
	add := func(d *gDashboard, where, raw string) {
		s, err := substituteVars(raw, dashboardVars(d))
		if err != nil {
			t.Errorf("%s: %s: %q: %v", d.file, where, raw, err)
			return
		}
		out = append(out, exprSource{where: d.file + ": " + where, expr: s})
	}
	for _, d := range dashboards {
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				ds := tg.Datasource
				if ds == nil {
					ds = p.Datasource
				}
				if !isPrometheus(ds) {
					continue
				}
				add(d, fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr)
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" || !isPrometheus(v.Datasource) {
				continue
			}
			q := variableQuery(v)
			switch {
			case labelValuesWithSelector.MatchString(q):
				add(d, "variable "+v.Name, labelValuesWithSelector.FindStringSubmatch(q)[1])
			case queryResult.MatchString(q):
				add(d, "variable "+v.Name, queryResult.FindStringSubmatch(q)[1])
			default:
				t.Errorf("%s: variable %s: query %q is neither label_values(<selector>, <label>) nor query_result(<expr>)", d.file, v.Name, q)
			}
		}
	}
	return out
}

// ---- Grafana provisioning ----

// provisionedDatasources maps uid -> type of every datasource provisioned in
// observability/grafana/provisioning/datasources.
func provisionedDatasources(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range repoGlob(t, "observability/grafana/provisioning/datasources/*.yml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			APIVersion  int `yaml:"apiVersion"`
			Datasources []struct {
				Name string `yaml:"name"`
				UID  string `yaml:"uid"`
				Type string `yaml:"type"`
				URL  string `yaml:"url"`
			} `yaml:"datasources"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, ds := range doc.Datasources {
			if ds.UID == "" {
				t.Errorf("%s: datasource %q has no uid", f, ds.Name)
				continue
			}
			if _, dup := out[ds.UID]; dup {
				t.Errorf("%s: datasource uid %q provisioned twice", f, ds.UID)
			}
			out[ds.UID] = ds.Type
		}
	}
	return out
}

// yamlUnmarshal decodes YAML (the promtool test files, provisioning files).
func yamlUnmarshal(b []byte, v any) error { return yaml.Unmarshal(b, v) }
