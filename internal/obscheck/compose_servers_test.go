package obscheck

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatrelay/chat/internal/testinfra"
)

// containerLayout lays out a compose service's bind mounts, volumes and
// configs under root as its container sees them, and returns a function
// that moves a command-line argument's container path (`--flag=/path...`)
// under root.
func containerLayout(t *testing.T, p *types.Project, s types.ServiceConfig, root string) func(string) string {
	t.Helper()
	var targets []string
	for _, v := range s.Volumes {
		dst := filepath.Join(root, v.Target)
		switch v.Type {
		case types.VolumeTypeBind:
			if err := os.CopyFS(dst, os.DirFS(v.Source)); err != nil {
				copyFile(t, v.Source, dst) // a single file
			}
		case types.VolumeTypeVolume:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		targets = append(targets, v.Target)
	}
	for _, c := range s.Configs {
		dst := filepath.Join(root, c.Target)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, dst, p.Configs[c.Source].Content)
		targets = append(targets, c.Target)
	}
	// Longest first: /etc/prometheus/alerts before /etc/prometheus.
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	return func(arg string) string {
		flag, val, ok := strings.Cut(arg, "=")
		for _, tg := range targets {
			if ok && (val == tg || strings.HasPrefix(val, tg+"/")) {
				return flag + "=" + filepath.Join(root, val)
			}
		}
		return arg
	}
}

// startComposeServer runs bin with a compose service's command line and
// environment, its files laid out as in the container, listening on a
// free loopback port, and waits until /-/ready answers. It returns the
// base URL and the process.
func startComposeServer(t *testing.T, service, bin string) (string, *proc) {
	t.Helper()
	p := loadComposeProject(t)
	s, ok := p.Services[service]
	if !ok {
		t.Fatalf("compose has no %s service", service)
	}
	inContainer := containerLayout(t, p, s, t.TempDir())
	var args []string
	for _, a := range s.Command {
		args = append(args, inContainer(a))
	}
	addr := testinfra.FreeAddr(t)
	args = append(args, "--web.listen-address="+addr)
	var env []string
	for k, v := range s.Environment {
		if v != nil {
			env = append(env, k+"="+*v)
		}
	}
	pr := startProc(t, service, bin, args, env)
	waitHTTP(t, pr, "http://"+addr+"/-/ready", 60*time.Second)
	return "http://" + addr, pr
}

// getJSON decodes the JSON answer of a GET into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := httpGet(ctx, url)
	if err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestComposePrometheusRuns runs Prometheus at the compose version the way
// compose does — its command line, environment and mounts — and checks
// that it takes them: it starts (a flag Prometheus 3 dropped stops it), no
// feature flag is unknown, the exemplar storage and remote-write receiver
// are on, the external labels the alerts' links are made of hold the
// environment's values (Prometheus 3 expands them), and every rule of
// alerts/ is loaded.
func TestComposePrometheusRuns(t *testing.T) {
	t.Parallel()
	base, pr := startComposeServer(t, "prometheus", testinfra.ToolBinary(t, "prometheus"))
	var flags struct{ Data map[string]string }
	getJSON(t, base+"/api/v1/status/flags", &flags)
	if f := flags.Data["enable-feature"]; !strings.Contains(f, "exemplar-storage") {
		t.Errorf("enable-feature = %q, want exemplar-storage", f)
	}
	if f := flags.Data["web.enable-remote-write-receiver"]; f != "true" {
		t.Errorf("web.enable-remote-write-receiver = %q", f)
	}
	var conf struct{ Data struct{ YAML string } }
	getJSON(t, base+"/api/v1/status/config", &conf)
	env := loadComposeProject(t).Services["prometheus"].Environment
	for label, v := range map[string]string{"runbook_base_url": "RUNBOOK_BASE_URL", "grafana_url": "GRAFANA_URL"} {
		want := label + ": " + deref(env[v])
		if env[v] == nil || !strings.Contains(conf.Data.YAML, want) {
			t.Errorf("external label %s is not the environment's %s (want %q):\n%s", label, v, want, conf.Data.YAML)
		}
	}
	var rules struct {
		Data struct{ Groups []struct{ Rules []any } }
	}
	getJSON(t, base+"/api/v1/rules", &rules)
	loaded, want := 0, 0
	for _, g := range rules.Data.Groups {
		loaded += len(g.Rules)
	}
	for _, f := range loadRuleFiles(t) {
		for _, g := range f.groups.Groups {
			want += len(g.Rules)
		}
	}
	if loaded != want {
		t.Errorf("Prometheus loaded %d rules, alerts/*.yml have %d", loaded, want)
	}
	if out := pr.out.String(); strings.Contains(out, "Unknown option") || strings.Contains(out, "level=ERROR") {
		t.Errorf("Prometheus complains about the compose setup:\n%s", out)
	}
}

// TestComposeAlertmanagerRuns runs Alertmanager at the compose version with
// the compose command line, config and webhook URL files, and checks that
// it loaded the config.
func TestComposeAlertmanagerRuns(t *testing.T) {
	t.Parallel()
	base, pr := startComposeServer(t, "alertmanager", testinfra.ToolBinary(t, "alertmanager"))
	var status struct {
		Config struct{ Original string }
	}
	getJSON(t, base+"/api/v2/status", &status)
	for _, want := range []string{"receiver: pager", "url_file:"} {
		if !strings.Contains(status.Config.Original, want) {
			t.Errorf("the loaded config lacks %q:\n%s", want, status.Config.Original)
		}
	}
	if out := pr.out.String(); strings.Contains(out, "level=ERROR") {
		t.Errorf("Alertmanager complains about the compose setup:\n%s", out)
	}
}
