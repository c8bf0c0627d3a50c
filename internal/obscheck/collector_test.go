package obscheck

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/testinfra"
)

// testOnlyExporter is the component the test build adds to the config's:
// the tests write the logs pipeline to a file instead of Loki.
const testOnlyExporter = "file"

// collectorKinds are the component sections of a collector config.
var collectorKinds = []string{"receivers", "processors", "exporters", "extensions"}

// configComponentTypes returns, per kind, the component types the compose
// collector config defines (the id's part before "/").
func configComponentTypes(t testing.TB) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), testinfra.CollectorConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]map[string]any
	if err := yamlUnmarshal(b, &conf); err != nil {
		t.Fatalf("%s: %v", testinfra.CollectorConfigPath, err)
	}
	out := map[string][]string{}
	for _, kind := range collectorKinds {
		for id := range conf[kind] {
			typ, _, _ := strings.Cut(id, "/")
			if !slices.Contains(out[kind], typ) {
				out[kind] = append(out[kind], typ)
			}
		}
		sort.Strings(out[kind])
	}
	return out
}

// TestCollectorHasTheConfigsComponents: the collector the tests build has
// exactly the components observability/otel-collector/config.yml uses (and
// the test-only file exporter): one the config gains must be built in
// (tools/otelcol/components.go), one it drops must go.
func TestCollectorHasTheConfigsComponents(t *testing.T) {
	bin := testinfra.ToolBinary(t, "otelcol")
	out, err := run(t, t.TempDir(), time.Minute, bin, "components")
	if err != nil {
		t.Fatalf("otelcol components: %v\n%s", err, out)
	}
	type named []struct {
		Name string `yaml:"name"`
	}
	var built struct {
		Receivers  named `yaml:"receivers"`
		Processors named `yaml:"processors"`
		Exporters  named `yaml:"exporters"`
		Extensions named `yaml:"extensions"`
	}
	if err := yamlUnmarshal([]byte(out), &built); err != nil {
		t.Fatalf("otelcol components: %v\n%s", err, out)
	}
	byKind := map[string]named{
		"receivers": built.Receivers, "processors": built.Processors,
		"exporters": built.Exporters, "extensions": built.Extensions,
	}
	want := configComponentTypes(t)
	want["exporters"] = append(want["exporters"], testOnlyExporter)
	sort.Strings(want["exporters"])
	for _, kind := range collectorKinds {
		var have []string
		for _, c := range byKind[kind] {
			have = append(have, c.Name)
		}
		sort.Strings(have)
		if !slices.Equal(have, want[kind]) {
			t.Errorf("%s: built %v, the config uses %v (plus the tests' %s exporter)", kind, have, want[kind], testOnlyExporter)
		}
	}
}

// TestCollectorValidatesConfig runs `otelcol validate` on the real config,
// unchanged: the collector at the compose version accepts every component
// setting and OTTL statement in it.
func TestCollectorValidatesConfig(t *testing.T) {
	bin := testinfra.ToolBinary(t, "otelcol")
	conf := filepath.Join(repoRoot(t), testinfra.CollectorConfigPath)
	out, err := run(t, t.TempDir(), time.Minute, bin, "validate", "--config="+conf)
	if err != nil {
		t.Fatalf("otelcol validate %s: %v\n%s", testinfra.CollectorConfigPath, err, out)
	}
}
