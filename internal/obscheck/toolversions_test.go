package obscheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatrelay/chat/internal/testinfra"
	"github.com/chatrelay/chat/internal/testinfra/toolcache"
)

// composeTools pairs each test tool with the compose service running the
// same program and the image repository it comes from.
var composeTools = []struct{ tool, service, repo string }{
	{"prometheus", "prometheus", "prom/prometheus"},
	{"alertmanager", "alertmanager", "prom/alertmanager"},
	{"otelcol", "otel-collector", "otel/opentelemetry-collector-contrib"},
}

// TestToolVersionsMatchCompose: the Prometheus, Alertmanager and collector
// the tests run are the releases compose ships. tools/<tool>/go.mod names
// each version; the image tag must be the same release.
func TestToolVersionsMatchCompose(t *testing.T) {
	p := loadComposeProject(t)
	root := repoRoot(t)
	for _, c := range composeTools {
		tool := lookupTool(t, c.tool)
		v, err := tool.Version(root)
		if err != nil {
			t.Fatal(err)
		}
		svc, ok := p.Services[c.service]
		if !ok {
			t.Errorf("compose has no %s service", c.service)
			continue
		}
		tag, ok := imageTag(svc, c.repo)
		if !ok {
			t.Errorf("%s: runs no %s image", c.service, c.repo)
			continue
		}
		if got, want := tool.Release(v), strings.TrimPrefix(tag, "v"); got != want {
			t.Errorf("%s: the tests build %s %s (%s/go.mod: %s %s), compose ships %s:%s",
				c.service, c.tool, got, tool.Dir, tool.Module, v, c.repo, tag)
		}
	}
}

// imageTag finds the tag of repo among the service's image and build
// arguments (the collector's image is built FROM a BASE_IMAGE argument).
func imageTag(s types.ServiceConfig, repo string) (string, bool) {
	refs := []string{s.Image}
	if s.Build != nil {
		for _, v := range s.Build.Args {
			if v != nil {
				refs = append(refs, *v)
			}
		}
	}
	for _, ref := range refs {
		if name, tag, ok := strings.Cut(ref, ":"); ok && name == repo {
			return tag, true
		}
	}
	return "", false
}

// TestCollectorModulesAtOneVersion: every collector module the collector is
// built from that is versioned with the collector (v0.x: core components and
// all of contrib) is at the collector's version; the v1.x core modules are
// what those v0.x modules require.
func TestCollectorModulesAtOneVersion(t *testing.T) {
	tool := lookupTool(t, "otelcol")
	v, err := tool.Version(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(repoRoot(t), tool.Dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range lines(string(b)) {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.HasPrefix(f[1], "v0.") || !isCollectorModule(f[0]) {
			continue
		}
		n++
		if f[1] != v {
			t.Errorf("%s/go.mod: %s %s, want the collector's %s", tool.Dir, f[0], f[1], v)
		}
	}
	if n < 10 {
		t.Errorf("%s/go.mod: only %d collector modules found", tool.Dir, n)
	}
}

func isCollectorModule(m string) bool {
	return strings.HasPrefix(m, "go.opentelemetry.io/collector/") ||
		strings.HasPrefix(m, "github.com/open-telemetry/opentelemetry-collector-contrib/")
}

// TestToolBinariesReportTheirVersion: each built binary says it is the
// release its go.mod names (`--version`), so what `make tools` cached is
// what the version checks above compared.
func TestToolBinariesReportTheirVersion(t *testing.T) {
	root := repoRoot(t)
	for _, bin := range []string{"prometheus", "promtool", "alertmanager", "amtool", "otelcol"} {
		t.Run(bin, func(t *testing.T) {
			path := testinfra.ToolBinary(t, bin)
			tool := lookupTool(t, bin)
			v, err := tool.Version(root)
			if err != nil {
				t.Fatal(err)
			}
			out, err := run(t, t.TempDir(), time.Minute, path, "--version")
			if err != nil {
				t.Fatalf("%s --version: %v\n%s", bin, err, out)
			}
			if want := "version " + tool.Release(v); !strings.Contains(out, want) {
				t.Errorf("%s --version does not say %q:\n%s", bin, want, out)
			}
		})
	}
}

func lookupTool(t testing.TB, bin string) toolcache.Tool {
	t.Helper()
	tool, err := toolcache.Lookup(bin)
	if err != nil {
		t.Fatal(err)
	}
	return tool
}
