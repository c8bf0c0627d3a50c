// Package toolcache builds the servers and tools the tests run that Debian
// does not ship at the versions the deployment uses — Prometheus and
// promtool, Alertmanager and amtool, the OpenTelemetry Collector, Jaeger,
// Helm — from their own modules under tools/ into the user cache, once, and
// finds them there.
//
// Each tool's go.mod is the one place that names its version: the build,
// the cached binary's name and the tests that compare it with the compose
// image tags all read it from there. A binary's name also carries a hash of
// its module (go.mod, go.sum, *.go) and build flags, so changing any of
// them builds a new binary instead of running a stale one.
package toolcache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Bin is one binary of a tool.
type Bin struct {
	Name string // the binary's name, e.g. "promtool"
	Pkg  string // the main package to build; "." is the tool module's own
}

// Tool is a module under tools/ and the binaries built from it.
type Tool struct {
	Name   string // e.g. "prometheus"
	Dir    string // the module's directory, relative to the repo root
	Module string // the dependency whose version is the tool's version
	Bins   []Bin
	// Release turns the module version into the upstream release version
	// as the image tags write it, without a leading "v".
	Release func(moduleVersion string) string
	// VersionVar, when set, is the variable that -X sets to the release
	// version, so `<bin> --version` says what the image would say.
	VersionVar string
	// Vars, when set, are more -X settings of the build (variable → value),
	// made from the versions the tool's go.mod requires (version(module)):
	// what the upstream release build sets and a plain `go build` would not.
	Vars func(version func(module string) (string, error)) (map[string]string, error)
}

// promVersion is where Prometheus-family binaries keep their version.
const promVersion = "github.com/prometheus/common/version.Version"

// Tools lists every tool, in build order (quickest first).
var Tools = []Tool{
	{
		Name: "alertmanager", Dir: "tools/alertmanager", Module: "github.com/prometheus/alertmanager",
		Bins: []Bin{
			{"alertmanager", "github.com/prometheus/alertmanager/cmd/alertmanager"},
			{"amtool", "github.com/prometheus/alertmanager/cmd/amtool"},
		},
		Release: plainRelease, VersionVar: promVersion,
	},
	{
		Name: "otelcol", Dir: "tools/otelcol", Module: "go.opentelemetry.io/collector/otelcol",
		Bins:    []Bin{{"otelcol", "."}},
		Release: plainRelease,
	},
	{
		Name: "prometheus", Dir: "tools/prometheus", Module: "github.com/prometheus/prometheus",
		Bins: []Bin{
			{"prometheus", "github.com/prometheus/prometheus/cmd/prometheus"},
			{"promtool", "github.com/prometheus/prometheus/cmd/promtool"},
		},
		Release: PrometheusRelease, VersionVar: promVersion,
	},
	{
		Name: "jaeger", Dir: "tools/jaeger", Module: "github.com/jaegertracing/jaeger",
		Bins:    []Bin{{"jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger"}},
		Release: plainRelease,
	},
	{
		Name: "helm", Dir: "tools/helm", Module: helmModule,
		Bins:    []Bin{{"helm", "helm.sh/helm/v3/cmd/helm"}},
		Release: plainRelease, Vars: helmVars,
	},
}

const helmModule = "helm.sh/helm/v3"

// helmVars are the -X settings of Helm's own release build (its Makefile):
// the version `helm version` reports, with its "v", and the Kubernetes
// version of the client libraries it is built with (k8s.io/client-go
// v0.X.Y is Kubernetes 1.X), which `helm template` renders for and `helm
// lint` checks deprecated APIs against. Unset, both say Kubernetes 1.20.
func helmVars(version func(string) (string, error)) (map[string]string, error) {
	v, err := version(helmModule)
	if err != nil {
		return nil, err
	}
	cg, err := version("k8s.io/client-go")
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.TrimPrefix(cg, "v"), ".")
	if len(parts) < 2 || parts[0] != "0" {
		return nil, fmt.Errorf("k8s.io/client-go %s: want v0.<Kubernetes minor>.<patch>", cg)
	}
	vars := map[string]string{helmModule + "/internal/version.version": v}
	for _, pkg := range []string{"pkg/chartutil", "pkg/lint/rules"} {
		vars[helmModule+"/"+pkg+".k8sVersionMajor"] = "1"
		vars[helmModule+"/"+pkg+".k8sVersionMinor"] = parts[1]
	}
	return vars, nil
}

// Lookup returns the tool that builds the binary bin.
func Lookup(bin string) (Tool, error) {
	for _, t := range Tools {
		for _, b := range t.Bins {
			if b.Name == bin {
				return t, nil
			}
		}
	}
	return Tool{}, fmt.Errorf("no test tool builds %q", bin)
}

func plainRelease(v string) string { return strings.TrimPrefix(v, "v") }

// PrometheusRelease maps Prometheus's Go module version to its release:
// since 3.0 the module is tagged v0.<major*100+minor>.<patch>, so v0.305.0
// is Prometheus 3.5.0.
func PrometheusRelease(v string) string {
	parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
	if len(parts) != 3 || parts[0] != "0" {
		return strings.TrimPrefix(v, "v")
	}
	mm, err := strconv.Atoi(parts[1])
	if err != nil || mm < 100 {
		return strings.TrimPrefix(v, "v")
	}
	return fmt.Sprintf("%d.%d.%s", mm/100, mm%100, parts[2])
}

// Version is the version of t.Module that t's go.mod requires.
func (t Tool) Version(root string) (string, error) {
	path := filepath.Join(root, t.Dir, "go.mod")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("tool %s: %w", t.Name, err)
	}
	return requiredVersion(b, t.Module, path)
}

// requiredVersion finds module's version among the require lines of a
// go.mod (single-line `require m v` or inside a require block).
func requiredVersion(gomod []byte, module, where string) (string, error) {
	for _, line := range strings.Split(string(gomod), "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) == 2 && f[0] == module {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s requires no %s", where, module)
}

// ldflags are the -ldflags of t's build, from its go.mod.
func (t Tool) ldflags(root string) (string, error) {
	path := filepath.Join(root, t.Dir, "go.mod")
	gomod, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("tool %s: %w", t.Name, err)
	}
	version := func(module string) (string, error) { return requiredVersion(gomod, module, path) }
	vars := map[string]string{}
	if t.VersionVar != "" {
		v, err := version(t.Module)
		if err != nil {
			return "", err
		}
		vars[t.VersionVar] = t.Release(v)
	}
	if t.Vars != nil {
		more, err := t.Vars(version)
		if err != nil {
			return "", fmt.Errorf("tool %s: %w", t.Name, err)
		}
		maps.Copy(vars, more)
	}
	var flags []string
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		flags = append(flags, "-X "+name+"="+vars[name])
	}
	return strings.Join(flags, " "), nil
}

// key hashes what decides t's binaries: its module files and build flags.
func (t Tool) key(root string) (string, error) {
	dir := filepath.Join(root, t.Dir)
	sources, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return "", fmt.Errorf("tool %s: %w", t.Name, err)
	}
	h := sha256.New()
	for _, f := range append([]string{filepath.Join(dir, "go.mod"), filepath.Join(dir, "go.sum")}, sources...) {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("tool %s: %w", t.Name, err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	fl, err := t.ldflags(root)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "ldflags %s\n", fl)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// CacheDir is where the binaries live: <user cache>/chat-tools.
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("user cache directory: %w", err)
	}
	return filepath.Join(dir, "chat-tools"), nil
}

// Path is where binary bin of t is (or will be) cached:
// <cache>/<bin>-<version>-<key>.
func (t Tool) Path(root, bin string) (string, error) {
	v, err := t.Version(root)
	if err != nil {
		return "", err
	}
	k, err := t.key(root)
	if err != nil {
		return "", err
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, bin+"-"+v+"-"+k), nil
}
