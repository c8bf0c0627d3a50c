package chartcheck

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/process"
	"github.com/chatrelay/chat/internal/testinfra"
	"github.com/chatrelay/chat/internal/testinfra/toolcache"
)

const (
	chartDir  = "deploy/helm/chat"
	release   = "chat"
	namespace = "chat"
)

// The APIs the chart's `auto` objects wait for, as `helm template
// --api-versions` passes them (a cluster that serves them).
var (
	monitoringAPIs = []string{"monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"}
	customMetrics  = "custom.metrics.k8s.io/v1beta1"
)

// chartCase is one value set: a file under the chart's ci/ (where
// chart-testing looks for them too), the APIs the cluster serves, and how
// many objects of each kind it must render.
type chartCase struct {
	name   string
	values string   // ci/<values>
	apis   []string // --api-versions
	set    []string // --set
	want   map[string]int
}

var cases = []chartCase{
	{
		name: "defaults, bare cluster", values: "default-values.yaml",
		// Without the Prometheus Operator or a custom metrics API nothing
		// waits for them: no ServiceMonitor, no PrometheusRule, and the
		// HPA scales on CPU only.
		want: map[string]int{"Deployment": 2, "StatefulSet": 2, "Service": 5, "ConfigMap": 5, "HorizontalPodAutoscaler": 1,
			"PodDisruptionBudget": 4, "Ingress": 0, "ServiceMonitor": 0, "PrometheusRule": 0, "ScaledObject": 2},
	},
	{
		name: "defaults, with the Prometheus Operator and custom metrics", values: "default-values.yaml",
		apis: append([]string{customMetrics}, monitoringAPIs...),
		want: map[string]int{"Deployment": 2, "StatefulSet": 2, "Service": 5, "ConfigMap": 5, "HorizontalPodAutoscaler": 1,
			"PodDisruptionBudget": 4, "Ingress": 0, "ServiceMonitor": 1, "PrometheusRule": 1, "ScaledObject": 2},
	},
	{
		name: "ingress, RS256, Redis URL from the Secret", values: "ingress-values.yaml",
		apis: append([]string{customMetrics}, monitoringAPIs...),
		want: map[string]int{"Deployment": 1, "StatefulSet": 2, "Service": 3, "ConfigMap": 4, "HorizontalPodAutoscaler": 1,
			"PodDisruptionBudget": 3, "Ingress": 1, "ServiceMonitor": 1, "PrometheusRule": 1, "ScaledObject": 2},
	},
	{
		name: "fixed replicas, no monitoring objects, no edge", values: "fixed-values.yaml",
		apis: append([]string{customMetrics}, monitoringAPIs...),
		want: map[string]int{"Deployment": 1, "StatefulSet": 2, "Service": 3, "ConfigMap": 0, "HorizontalPodAutoscaler": 0,
			"PodDisruptionBudget": 3, "Ingress": 0, "ServiceMonitor": 0, "PrometheusRule": 0, "ScaledObject": 0},
	},
	{
		name: "monitoring forced on without the APIs", values: "default-values.yaml",
		set: []string{"monitoring.serviceMonitor=true", "monitoring.prometheusRule=true", "websocketServer.autoscaling.sockets.enabled=true"},
		want: map[string]int{"Deployment": 2, "StatefulSet": 2, "Service": 5, "ConfigMap": 5, "HorizontalPodAutoscaler": 1,
			"PodDisruptionBudget": 4, "Ingress": 0, "ServiceMonitor": 1, "PrometheusRule": 1, "ScaledObject": 2},
	},
}

// valueArgs are the case's values, for helm lint and helm template.
func (c chartCase) valueArgs() []string {
	args := []string{"-f", filepath.Join("ci", c.values)}
	for _, s := range c.set {
		args = append(args, "--set", s)
	}
	return args
}

// templateArgs renders the case's values from chart, a directory or a
// packaged chart, for a cluster that serves the case's APIs.
func (c chartCase) templateArgs(chart string) []string {
	args := append([]string{"template", release, chart, "--namespace", namespace}, c.valueArgs()...)
	for _, a := range c.apis {
		args = append(args, "--api-versions", a)
	}
	return args
}

// helm runs the helm test tool in the chart's directory and returns its
// standard output; standard error (Helm's notes on the symbolic links in
// files/) goes into the error only.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testinfra.ToolBinary(t, "helm")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = filepath.Join(testinfra.RepoRoot(t), chartDir)
	// Helm keeps its repositories, cache and plugins here; none is used.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &helmError{err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

type helmError struct {
	err    error
	stderr string
}

func (e *helmError) Error() string { return e.err.Error() + "\n" + e.stderr }

func render(t *testing.T, c chartCase) *manifest {
	t.Helper()
	out, err := helm(t, c.templateArgs(".")...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	m, err := decodeManifest([]byte(out))
	if err != nil {
		t.Fatalf("helm template rendered an object that does not decode strictly: %v", err)
	}
	return m
}

// The helm the tests run is the release tools/helm/go.mod names.
func TestHelmVersion(t *testing.T) {
	tool, err := toolcache.Lookup("helm")
	if err != nil {
		t.Fatal(err)
	}
	want, err := tool.Version(testinfra.RepoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	out, err := helm(t, "version", "--template", "{{ .Version }}")
	if err != nil {
		t.Fatal(err)
	}
	if out != want {
		t.Errorf("helm version says %q, tools/helm/go.mod names %s", out, want)
	}
}

// helm lint, strict (warnings fail), with every value set. (Lint has no
// --api-versions: the cases that differ only there lint alike.)
func TestChartLints(t *testing.T) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"lint", ".", "--strict", "--namespace", namespace}, c.valueArgs()...)
			if out, err := helm(t, args...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// Every value set renders objects that decode strictly into their types,
// in the expected numbers, and pass every check of checks_test.go.
func TestChartRenders(t *testing.T) {
	root := testinfra.RepoRoot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := render(t, c)
			if got := counts(m); !reflect.DeepEqual(got, c.want) {
				t.Errorf("rendered %v, want %v", got, c.want)
			}
			for _, ch := range checks {
				for _, p := range ch.check(root, m) {
					t.Errorf("%s: %s", ch.name, p)
				}
			}
		})
	}
}

func counts(m *manifest) map[string]int {
	return map[string]int{
		"Deployment": len(m.Deployments), "StatefulSet": len(m.StatefulSets), "Service": len(m.Services),
		"ConfigMap": len(m.ConfigMaps), "HorizontalPodAutoscaler": len(m.HPAs), "PodDisruptionBudget": len(m.PDBs),
		"Ingress": len(m.Ingresses), "ServiceMonitor": len(m.ServiceMonitors), "PrometheusRule": len(m.PrometheusRules),
		"ScaledObject": len(m.ScaledObjects),
	}
}

// Values the chart must refuse, each with a message naming what to change.
func TestChartRefuses(t *testing.T) {
	tests := []struct {
		name string
		set  []string
		want string
	}{
		{"more consumers than partitions", []string{"aiConsumer.autoscaling.maxReplicas=13"}, "more than kafka.partitions 12"},
		{"a password in redis.url", []string{"redis.url=redis://:hunter2@redis:6379/0"}, "put REDIS_URL in the Secret"},
		{"redis.url and urlFromSecret", []string{"redis.urlFromSecret=true"}, "redis.url and redis.urlFromSecret"},
		{"a variable the chart sets", []string{"aiConsumer.env.INSTANCE_ID=ai-1"}, "env INSTANCE_ID: the chart sets it"},
		{"no brokers", []string{"kafka.bootstrapServers="}, "kafka.bootstrapServers"},
		{"no image tag", []string{"image.tag="}, "image.tag"},
		{"an unknown edge", []string{"edge.mode=haproxy"}, `edge.mode "haproxy"`},
		{"ingress without a host", []string{"edge.mode=ingress"}, "edge.ingress.host"},
		{"RS256 without a key file", []string{"auth.algorithm=RS256"}, "auth.keyFile.secretName"},
		{"a tri-state that is none", []string{"monitoring.serviceMonitor=maybe"}, `"maybe" is not true, false or auto`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", release, ".", "-f", "ci/default-values.yaml"}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, err := helm(t, args...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("helm template failed without saying %q: %v", tc.want, err)
			}
		})
	}
}

// files/ links to alerts/, dashboards/ and nginx/nginx.conf outside the
// chart. `helm package` must carry their content: the packaged chart
// renders exactly what the directory does.
func TestPackagedChartRendersTheSame(t *testing.T) {
	dir := t.TempDir()
	if out, err := helm(t, "package", ".", "--destination", dir); err != nil {
		t.Fatalf("helm package: %v\n%s", err, out)
	}
	pkgs, err := filepath.Glob(filepath.Join(dir, "chat-*.tgz"))
	if err != nil || len(pkgs) != 1 {
		t.Fatalf("helm package wrote %v (%v)", pkgs, err)
	}
	c := cases[1]
	fromDir, err := helm(t, c.templateArgs(".")...)
	if err != nil {
		t.Fatal(err)
	}
	fromPkg, err := helm(t, c.templateArgs(pkgs[0])...)
	if err != nil {
		t.Fatal(err)
	}
	if fromDir != fromPkg {
		t.Error("the packaged chart renders differently from its directory")
	}
	if !strings.Contains(fromPkg, "KafkaConsumerLagHigh") || !strings.Contains(fromPkg, `"uid": "chat-overview"`) {
		t.Error("the packaged chart lacks the alerts or the dashboards")
	}
}

// With its default requests the chart runs every service with the
// GOMAXPROCS the tests and the performance figures run with; a service's
// own env setting wins over the one from its request.
func TestChartGOMAXPROCS(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want map[string]string
	}{
		{"default requests", nil, map[string]string{
			process.Gateway: config.DeployedGOMAXPROCS, process.AIConsumer: config.DeployedGOMAXPROCS, process.Relay: config.DeployedGOMAXPROCS}},
		{"a larger request, rounded up", []string{"--set", "aiConsumer.resources.requests.cpu=1500m"}, map[string]string{process.AIConsumer: "2"}},
		{"env wins", []string{"--set", "messageRelay.env.GOMAXPROCS=3"}, map[string]string{process.Relay: "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, append(cases[0].templateArgs("."), tc.set...)...)
			if err != nil {
				t.Fatal(err)
			}
			m, err := decodeManifest([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, w := range m.workloads() {
				for _, c := range w.Template.Spec.Containers {
					if _, ok := tc.want[c.Name]; ok {
						env, problems := serviceEnv(w, c)
						if len(problems) > 0 {
							t.Errorf("%s: %v", c.Name, problems)
						}
						got[c.Name] = env["GOMAXPROCS"]
					}
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("GOMAXPROCS %v, want %v", got, tc.want)
			}
		})
	}
}
