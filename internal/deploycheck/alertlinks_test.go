package deploycheck

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// Defect: runbook_url was a repository path (docs/runbooks.md#…), which
// Alertmanager and Grafana show as a dead link, and no alert said which
// dashboard to open. Each alert's links are templates over two Prometheus
// external labels that compose sets from the environment (RUNBOOK_BASE_URL,
// GRAFANA_URL), and point at a runbook section and a dashboard panel that
// exist.

const (
	runbooksPath   = "docs/runbooks.md"
	prometheusYML  = "observability/prometheus/prometheus.yml"
	runbookBase    = "{{ $externalLabels.runbook_base_url }}"
	grafanaBase    = "{{ $externalLabels.grafana_url }}"
	alertRuleGlob  = "alerts/*.yml"
	dashboardsGlob = "dashboards/*.json"
)

// linkLabels are the external labels the links are built on, with the
// environment variable each is read from.
var linkLabels = map[string]string{"runbook_base_url": "RUNBOOK_BASE_URL", "grafana_url": "GRAFANA_URL"}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Annotations map[string]string `yaml:"annotations"`
}

// alertRules reads every alerting rule of the rule files Prometheus loads.
func alertRules(t *testing.T, root string) []alertRule {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, alertRuleGlob))
	if err != nil {
		t.Fatal(err)
	}
	var out []alertRule
	for _, f := range files {
		var rf struct {
			Groups []struct {
				Rules []alertRule `yaml:"rules"`
			} `yaml:"groups"`
		}
		readYAML(t, f, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					out = append(out, r)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no alerting rules in %s", alertRuleGlob)
	}
	return out
}

// markdownAnchors are the anchors a code host makes of the headings: lower
// case, punctuation dropped, spaces to dashes.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	anchors := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") {
			h := drop.ReplaceAllString(strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#"))), "")
			anchors[strings.ReplaceAll(h, " ", "-")] = true
		}
	}
	return anchors
}

// dashboardPanels maps each dashboard uid to the ids of its panels,
// including those inside collapsed rows.
func dashboardPanels(t *testing.T, root string) map[string]map[int]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, dashboardsGlob))
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		ID     int     `json:"id"`
		Panels []panel `json:"panels"`
	}
	out := map[string]map[int]bool{}
	for _, f := range files {
		var d struct {
			UID    string  `json:"uid"`
			Panels []panel `json:"panels"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			ids[p.ID] = true
			for _, c := range p.Panels {
				ids[c.ID] = true
			}
		}
		out[d.UID] = ids
	}
	return out
}

var viewPanel = regexp.MustCompile(`^panel-(\d+)$`)

// checkDashboardURL: <grafana base>/d/<uid>?viewPanel=panel-<id>[&…] names
// a panel that exists.
func checkDashboardURL(panels map[string]map[int]bool, raw string) error {
	rest, ok := strings.CutPrefix(raw, grafanaBase+"/d/")
	if !ok {
		return fmt.Errorf("does not start with %s/d/", grafanaBase)
	}
	uid, query, _ := strings.Cut(rest, "?")
	ids, ok := panels[uid]
	if !ok {
		return fmt.Errorf("no dashboard with uid %q in %s", uid, dashboardsGlob)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return fmt.Errorf("query %q: %w", query, err)
	}
	m := viewPanel.FindStringSubmatch(q.Get("viewPanel"))
	if m == nil {
		return fmt.Errorf("no viewPanel=panel-<id>")
	}
	var id int
	_, _ = fmt.Sscan(m[1], &id)
	if !ids[id] {
		return fmt.Errorf("dashboard %s has no panel %d", uid, id)
	}
	return nil
}

func TestAlertLinks(t *testing.T) {
	root := repoRoot(t)
	anchors := markdownAnchors(t, filepath.Join(root, runbooksPath))
	panels := dashboardPanels(t, root)
	for _, r := range alertRules(t, root) {
		anchor := strings.ToLower(r.Alert)
		want := runbookBase + "/" + runbooksPath + "#" + anchor
		if got := r.Annotations["runbook_url"]; got != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, want)
		}
		if !anchors[anchor] {
			t.Errorf("%s: %s has no section %q (a heading `## %s`)", r.Alert, runbooksPath, anchor, r.Alert)
		}
		if err := checkDashboardURL(panels, r.Annotations["dashboard_url"]); err != nil {
			t.Errorf("%s: dashboard_url %q: %v", r.Alert, r.Annotations["dashboard_url"], err)
		}
	}
}

// promConfig is the part of prometheus.yml the link bases live in.
type promConfig struct {
	Global struct {
		ExternalLabels map[string]string `yaml:"external_labels"`
	} `yaml:"global"`
	Alerting struct {
		AlertRelabelConfigs []struct {
			Action string `yaml:"action"`
			Regex  string `yaml:"regex"`
		} `yaml:"alert_relabel_configs"`
	} `yaml:"alerting"`
}

// checkAlertLinkBases: Prometheus reads each link base from its
// environment (Prometheus 3 expands ${VAR} in external labels), compose
// gives the variable an absolute default, and the labels are dropped from
// the alerts sent to Alertmanager.
func checkAlertLinkBases(t *testing.T, root string, p *types.Project) {
	prom, ok := p.Services["prometheus"]
	if !ok {
		return
	}
	var c promConfig
	readYAML(t, filepath.Join(root, prometheusYML), &c)
	for label, env := range linkLabels {
		if got := c.Global.ExternalLabels[label]; got != "${"+env+"}" {
			t.Errorf("%s: external label %s=%q, want ${%s}", prometheusYML, label, got, env)
		}
		v := prom.Environment[env]
		if v == nil {
			t.Errorf("prometheus: %s is not set: the alerts' links would be relative", env)
		} else if u, err := url.Parse(*v); err != nil || !u.IsAbs() || u.Host == "" || strings.HasSuffix(*v, "/") {
			t.Errorf("prometheus: %s=%q is not an absolute URL without a trailing slash", env, *v)
		}
		dropped := false
		for _, rc := range c.Alerting.AlertRelabelConfigs {
			re, err := regexp.Compile("^(?:" + rc.Regex + ")$")
			dropped = dropped || (rc.Action == "labeldrop" && err == nil && re.MatchString(label))
		}
		if !dropped {
			t.Errorf("%s: external label %s is not dropped from the alerts sent to Alertmanager", prometheusYML, label)
		}
	}
}

// readYAML decodes the YAML file at path into v.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
