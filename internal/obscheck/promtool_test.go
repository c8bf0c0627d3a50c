package obscheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// copyFile copies src to dst, creating dst's directory.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

var ruleFilesFound = regexp.MustCompile(`SUCCESS: (\d+) rule files found`)

// TestPromtoolCheckConfig checks observability/prometheus/prometheus.yml the
// way the container sees it: the config at the top, the repo's alerts/ next
// to it (the overlay mounts them at /etc/prometheus/prometheus.yml and
// /etc/prometheus/alerts), so its rule_files glob must find every rule file.
func TestPromtoolCheckConfig(t *testing.T) {
	promtool := testinfra.ToolBinary(t, "promtool")
	root := repoRoot(t)
	dir := t.TempDir()
	copyFile(t, filepath.Join(root, "observability/prometheus/prometheus.yml"), filepath.Join(dir, "prometheus.yml"))
	rules := repoGlob(t, "alerts/*.yml")
	for _, f := range rules {
		copyFile(t, f, filepath.Join(dir, "alerts", filepath.Base(f)))
	}
	out, err := run(t, dir, time.Minute, promtool, "check", "config", "prometheus.yml")
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	m := ruleFilesFound.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("promtool did not report the rule files:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n != len(rules) {
		t.Errorf("prometheus.yml's rule_files find %d files, alerts/ has %d:\n%s", n, len(rules), out)
	}
	t.Logf("%s", out)
}

// TestPromtoolCheckRules runs `promtool check rules alerts/*.yml`.
func TestPromtoolCheckRules(t *testing.T) {
	promtool := testinfra.ToolBinary(t, "promtool")
	root := repoRoot(t)
	args := []string{"check", "rules"}
	for _, f := range repoGlob(t, "alerts/*.yml") {
		rel, _ := filepath.Rel(root, f)
		args = append(args, rel)
	}
	out, err := run(t, root, time.Minute, promtool, args...)
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("%s", out)
}

// TestPromtoolTestRules runs the rule unit tests,
// `promtool test rules alerts/tests/*.yml`, and checks that every alert of
// alerts/*.yml is tested both firing and silent.
func TestPromtoolTestRules(t *testing.T) {
	promtool := testinfra.ToolBinary(t, "promtool")
	root := repoRoot(t)
	tests := repoGlob(t, "alerts/tests/*.yml")
	args := []string{"test", "rules"}
	for _, f := range tests {
		rel, _ := filepath.Rel(root, f)
		args = append(args, rel)
	}
	out, err := run(t, root, 2*time.Minute, promtool, args...)
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("%s", out)

	fired, silent := alertTestCoverage(t, tests)
	for _, f := range loadRuleFiles(t) {
		for _, g := range f.groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				if !fired[r.Alert] {
					t.Errorf("alert %s: no unit test in alerts/tests expects it to fire", r.Alert)
				}
				if !silent[r.Alert] {
					t.Errorf("alert %s: no unit test in alerts/tests expects it to stay silent", r.Alert)
				}
			}
		}
	}
}

// alertTestCoverage reads promtool test files and returns which alerts have
// an alert_rule_test expecting them to fire and one expecting none.
func alertTestCoverage(t *testing.T, files []string) (fired, silent map[string]bool) {
	t.Helper()
	fired, silent = map[string]bool{}, map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Tests []struct {
				AlertRuleTests []struct {
					Alertname string        `yaml:"alertname"`
					ExpAlerts []interface{} `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
			} `yaml:"tests"`
		}
		if err := yamlUnmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range doc.Tests {
			for _, a := range tc.AlertRuleTests {
				if len(a.ExpAlerts) > 0 {
					fired[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
		}
	}
	return fired, silent
}

// amURLFile matches the receivers' url_file lines of alertmanager.yml.
var amURLFile = regexp.MustCompile(`(?m)^(\s*-?\s*)url_file:\s*(\S+)\s*$`)

// alertmanagerConfigWithURLs returns the repo's alertmanager.yml with every
// `url_file: <path>` replaced by `url: <urlFor(receiver file name)>`, so a
// test can point the receivers at itself; everything else, routing
// included, stays as it is.
func alertmanagerConfigWithURLs(t testing.TB, urlFor func(file string) string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "observability/alertmanager/alertmanager.yml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	out := amURLFile.ReplaceAllStringFunc(string(b), func(m string) string {
		sub := amURLFile.FindStringSubmatch(m)
		n++
		return sub[1] + "url: " + strconv.Quote(urlFor(filepath.Base(sub[2])))
	})
	if n == 0 {
		t.Fatal("alertmanager.yml has no url_file receiver to point at the test")
	}
	return out
}

// TestAmtoolCheckConfig validates the Alertmanager configuration, as compose
// mounts it (url_file receivers included), with amtool at the compose
// version, and checks its routing.
func TestAmtoolCheckConfig(t *testing.T) {
	amtool := testinfra.ToolBinary(t, "amtool")
	dir := t.TempDir()
	copyFile(t, filepath.Join(repoRoot(t), "observability/alertmanager/alertmanager.yml"), filepath.Join(dir, "alertmanager.yml"))
	out, err := run(t, dir, time.Minute, amtool, "check-config", "alertmanager.yml")
	if err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	for _, want := range []string{"2 receivers"} {
		if !strings.Contains(out, want) {
			t.Errorf("amtool check-config output lacks %q:\n%s", want, out)
		}
	}
	// Routing: pages to the pager, tickets to the ticket queue.
	for _, tc := range []struct{ labels, want string }{
		{"severity=page alertname=KafkaConsumerLagHigh", "pager"},
		{"severity=ticket alertname=KafkaDeadLetterRecords", "ticket"},
		{"alertname=Unlabelled", "ticket"},
	} {
		args := append([]string{"config", "routes", "test", "--config.file=alertmanager.yml"}, strings.Fields(tc.labels)...)
		out, err := run(t, dir, time.Minute, amtool, args...)
		if err != nil {
			t.Errorf("amtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		// The receiver is the last line (amtool may warn before it).
		ls := lines(out)
		if len(ls) == 0 || ls[len(ls)-1] != tc.want {
			t.Errorf("alert {%s} is routed to %q, want %q", tc.labels, out, tc.want)
		}
	}
}
