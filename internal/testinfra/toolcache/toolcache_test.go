package toolcache

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestPrometheusRelease(t *testing.T) {
	for in, want := range map[string]string{
		"v0.305.0": "3.5.0", "v0.300.1": "3.0.1", "v0.312.0": "3.12.0", "v0.401.2": "4.1.2",
		"v2.53.0": "2.53.0", // the old v2 tags pass through
	} {
		if got := PrometheusRelease(in); got != want {
			t.Errorf("PrometheusRelease(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestRequiredVersion(t *testing.T) {
	gomod := []byte("module x\n\nrequire example.com/one v1.2.3\n\nrequire (\n\texample.com/two v0.4.0 // indirect\n\texample.com/twofold v9.9.9\n)\n")
	for mod, want := range map[string]string{"example.com/one": "v1.2.3", "example.com/two": "v0.4.0"} {
		if got, err := requiredVersion(gomod, mod, "go.mod"); err != nil || got != want {
			t.Errorf("requiredVersion(%s) = %q, %v; want %s", mod, got, err, want)
		}
	}
	if _, err := requiredVersion(gomod, "example.com/three", "go.mod"); err == nil {
		t.Error("a module go.mod does not require was found")
	}
}

// Every tool's module is where the table says, names its version, and its
// binaries get distinct cache paths that change with the module's files.
func TestToolsResolve(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	seen := map[string]bool{}
	for _, tool := range Tools {
		v, err := tool.Version(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range tool.Bins {
			p, err := tool.Path(root, b.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(filepath.Base(p), b.Name+"-"+v+"-") || seen[p] {
				t.Errorf("%s: cache path %s", b.Name, p)
			}
			seen[p] = true
		}
	}
}

func TestKeyFollowsTheModule(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "tools", "x")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module x\nrequire example.com/x v1.0.0\n")
	write("go.sum", "")
	write("main.go", "package main\n")
	tool := Tool{Name: "x", Dir: "tools/x", Module: "example.com/x", Bins: []Bin{{"x", "."}}, Release: plainRelease}
	first, err := tool.Path(root, "x")
	if err != nil {
		t.Fatal(err)
	}
	write("main.go", "package main // changed\n")
	second, err := tool.Path(root, "x")
	if err != nil {
		t.Fatal(err)
	}
	if first == second {
		t.Errorf("changing main.go kept the cache path %s", first)
	}
}

// Helm is built as its release build is: the version it reports and the
// Kubernetes release it renders for follow tools/helm/go.mod.
func TestHelmLdflags(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	helm, err := Lookup("helm")
	if err != nil {
		t.Fatal(err)
	}
	v, err := helm.Version(root)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := helm.ldflags(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-X helm.sh/helm/v3/internal/version.version=" + v,
		"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
		"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
	} {
		if !strings.Contains(fl, want) {
			t.Errorf("helm ldflags %q lack %q", fl, want)
		}
	}

	versions := map[string]string{helmModule: "v3.22.0", "k8s.io/client-go": "v0.37.0"}
	lookup := func(m string) (string, error) {
		if v, ok := versions[m]; ok {
			return v, nil
		}
		return "", os.ErrNotExist
	}
	vars, err := helmVars(lookup)
	if err != nil {
		t.Fatal(err)
	}
	if got := vars["helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor"]; got != "37" {
		t.Errorf("client-go v0.37.0 gave Kubernetes minor %q, want 37", got)
	}
	versions["k8s.io/client-go"] = "v1.2.3"
	if _, err := helmVars(lookup); err == nil {
		t.Error("a client-go version that is not v0.X.Y was taken")
	}
}
