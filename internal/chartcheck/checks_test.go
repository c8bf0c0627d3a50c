package chartcheck

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/process"
	"github.com/chatrelay/chat/internal/telemetry"
)

// A check looks at one rendered manifest and returns what is wrong with
// it, one message a problem, so that the drift tests can break a manifest
// and see the check say so.
type check struct {
	name  string
	check func(root string, m *manifest) []string
}

var checks = []check{
	{"names and labels are valid", checkNames},
	{"selectors match the pods", checkSelectors},
	{"scalers target the workloads", checkScaleTargets},
	{"probes hit the ops port", checkProbes},
	{"environment is the services' configuration", checkEnv},
	{"grace period covers preStop and shutdown", checkGracePeriods},
	{"consumers scale on their group within the partitions", checkScaledObjects},
	{"the sockets target is below the capacity alert", checkSocketsTarget},
	{"the edge reaches the gateways", checkEdge},
	{"the ServiceMonitor scrapes each service once, as its job", checkServiceMonitor},
	{"the PrometheusRule is alerts/", checkPrometheusRule},
	{"the dashboards are dashboards/", checkDashboards},
}

// afterDeadline is what a service process still does after
// SHUTDOWN_TIMEOUT (process.Run): the ops listener's shutdown (up to 2 s)
// and the telemetry flush (up to 5 s). A pod's grace period must cover its
// preStop sleep, SHUTDOWN_TIMEOUT and this, or the kubelet kills a process
// that has not left its consumer group yet.
const afterDeadline = 7 * time.Second

// goService reports whether a component is one of the service binaries.
func goService(component string) bool { return slices.Contains(process.All(), component) }

type objectMeta struct {
	kind   string
	name   string // "" for a pod template
	labels map[string]string
}

func metasOf[T metav1.Object](kind string, objs []T) []objectMeta {
	var out []objectMeta
	for _, o := range objs {
		out = append(out, objectMeta{kind, o.GetName(), o.GetLabels()})
	}
	return out
}

// metas lists every object's kind, name and labels, pod templates included.
func (m *manifest) metas() []objectMeta {
	out := slices.Concat(metasOf("Deployment", m.Deployments), metasOf("StatefulSet", m.StatefulSets),
		metasOf("Service", m.Services), metasOf("ConfigMap", m.ConfigMaps),
		metasOf("HorizontalPodAutoscaler", m.HPAs), metasOf("PodDisruptionBudget", m.PDBs),
		metasOf("Ingress", m.Ingresses), metasOf("ServiceMonitor", m.ServiceMonitors),
		metasOf("PrometheusRule", m.PrometheusRules), metasOf("ScaledObject", m.ScaledObjects))
	for _, w := range m.workloads() {
		out = append(out, objectMeta{w.Kind + " " + w.Name + " pod template", "", w.Template.Labels})
	}
	return out
}

// checkNames: what the API server would refuse in names and labels.
func checkNames(_ string, m *manifest) []string {
	var problems []string
	for _, o := range m.metas() {
		if o.name != "" { // a pod template has none
			validate := validation.IsDNS1123Subdomain
			if o.kind == "Service" {
				validate = validation.IsDNS1035Label
			}
			for _, e := range validate(o.name) {
				problems = append(problems, fmt.Sprintf("%s %s: name: %s", o.kind, o.name, e))
			}
			// The controller-revision-hash label of a StatefulSet's pods is
			// the name and 11 more characters, in at most 63.
			if o.kind == "StatefulSet" && len(o.name) > 52 {
				problems = append(problems, fmt.Sprintf("StatefulSet %s: name longer than 52 characters", o.name))
			}
		}
		for k, v := range o.labels {
			for _, e := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				problems = append(problems, fmt.Sprintf("%s %s: label %s=%s: %s", o.kind, o.name, k, v, e))
			}
		}
	}
	for _, w := range m.workloads() {
		for _, c := range w.Template.Spec.Containers {
			for _, e := range validation.IsDNS1123Label(c.Name) {
				problems = append(problems, fmt.Sprintf("%s %s: container %s: %s", w.Kind, w.Name, c.Name, e))
			}
			for _, p := range c.Ports {
				for _, e := range validation.IsValidPortName(p.Name) {
					problems = append(problems, fmt.Sprintf("%s %s: port %s: %s", w.Kind, w.Name, p.Name, e))
				}
			}
		}
	}
	return problems
}

// podsSelected are the workloads whose pods a selector (matchLabels only,
// as the chart writes them) selects.
func podsSelected(m *manifest, sel map[string]string) []workload {
	if len(sel) == 0 {
		return nil
	}
	var out []workload
	for _, w := range m.workloads() {
		if labels.SelectorFromSet(sel).Matches(labels.Set(w.Template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func matchLabelsOnly(s *metav1.LabelSelector) (map[string]string, error) {
	if s == nil || len(s.MatchExpressions) > 0 {
		return nil, fmt.Errorf("selector %v: want matchLabels only", s)
	}
	return s.MatchLabels, nil
}

// containerPort finds a container port by name or number.
func containerPort(w workload, port intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, c := range w.Template.Spec.Containers {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return p, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

// checkSelectors: every workload selects its own pods and only them, and
// every Service, PodDisruptionBudget and spread constraint selects the
// pods of exactly one workload, on ports they have.
func checkSelectors(_ string, m *manifest) []string {
	var problems []string
	exactlyOne := func(what string, sel map[string]string) (workload, bool) {
		ws := podsSelected(m, sel)
		if len(ws) != 1 {
			var names []string
			for _, w := range ws {
				names = append(names, w.Name)
			}
			problems = append(problems, fmt.Sprintf("%s selects %v: the pods of %d workloads %v, want one", what, sel, len(ws), names))
			return workload{}, false
		}
		return ws[0], true
	}
	for _, w := range m.workloads() {
		// The workload's own selector and its spread constraints' select
		// its own pods, and only them.
		selectors := map[string]*metav1.LabelSelector{"": w.Selector}
		for i, tsc := range w.Template.Spec.TopologySpreadConstraints {
			selectors[fmt.Sprintf("'s spread constraint %d", i)] = tsc.LabelSelector
		}
		for what, ls := range selectors {
			what = fmt.Sprintf("%s %s%s", w.Kind, w.Name, what)
			sel, err := matchLabelsOnly(ls)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", what, err))
				continue
			}
			if got, ok := exactlyOne(what, sel); ok && got.Name != w.Name {
				problems = append(problems, fmt.Sprintf("%s selects the pods of %s", what, got.Name))
			}
		}
	}
	for _, s := range m.Services {
		w, ok := exactlyOne("Service "+s.Name, s.Spec.Selector)
		if !ok {
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(w, p.TargetPort); !ok {
				problems = append(problems, fmt.Sprintf("Service %s: port %s targets %s, which %s %s has no container port for", s.Name, p.Name, p.TargetPort.String(), w.Kind, w.Name))
			}
		}
	}
	for _, p := range m.PDBs {
		sel, err := matchLabelsOnly(p.Spec.Selector)
		if err != nil {
			problems = append(problems, fmt.Sprintf("PodDisruptionBudget %s: %v", p.Name, err))
			continue
		}
		exactlyOne("PodDisruptionBudget "+p.Name, sel)
	}
	// Every workload has a budget, so that a node drain takes its pods one
	// at a time.
	for _, w := range m.workloads() {
		covered := false
		for _, p := range m.PDBs {
			if sel, err := matchLabelsOnly(p.Spec.Selector); err == nil && labels.SelectorFromSet(sel).Matches(labels.Set(w.Template.Labels)) {
				covered = true
			}
		}
		if !covered {
			problems = append(problems, fmt.Sprintf("%s %s has no PodDisruptionBudget", w.Kind, w.Name))
		}
	}
	return problems
}

// scaler is an HPA or a ScaledObject, seen the same way.
type scaler struct {
	what          string
	kind, name    string
	min, max      int32
	cpu           bool // scales on CPU utilization (needs CPU requests)
	targetVersion string
}

func (m *manifest) scalers() []scaler {
	var out []scaler
	for _, h := range m.HPAs {
		s := scaler{what: "HorizontalPodAutoscaler " + h.Name, kind: h.Spec.ScaleTargetRef.Kind, name: h.Spec.ScaleTargetRef.Name,
			max: h.Spec.MaxReplicas, targetVersion: h.Spec.ScaleTargetRef.APIVersion}
		if h.Spec.MinReplicas != nil {
			s.min = *h.Spec.MinReplicas
		}
		for _, mt := range h.Spec.Metrics {
			s.cpu = s.cpu || (mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU)
		}
		out = append(out, s)
	}
	for _, so := range m.ScaledObjects {
		s := scaler{what: "ScaledObject " + so.Name, kind: so.Spec.ScaleTargetRef.Kind, name: so.Spec.ScaleTargetRef.Name,
			targetVersion: so.Spec.ScaleTargetRef.APIVersion}
		if so.Spec.MinReplicaCount != nil {
			s.min = *so.Spec.MinReplicaCount
		}
		if so.Spec.MaxReplicaCount != nil {
			s.max = *so.Spec.MaxReplicaCount
		}
		for _, tr := range so.Spec.Triggers {
			s.cpu = s.cpu || tr.Type == "cpu"
		}
		out = append(out, s)
	}
	return out
}

// checkScaleTargets: each scaler scales a workload that exists, one scaler
// a workload, within sane bounds; a scaled workload leaves its replicas to
// the scaler (a replicas field would reset them at every upgrade); CPU
// scaling has CPU requests to measure against.
func checkScaleTargets(_ string, m *manifest) []string {
	var problems []string
	scaledBy := map[string]string{}
	for _, s := range m.scalers() {
		var target *workload
		for _, w := range m.workloads() {
			if w.Kind == s.kind && w.Name == s.name {
				target = &w
			}
		}
		if target == nil || s.targetVersion != "apps/v1" {
			problems = append(problems, fmt.Sprintf("%s scales %s %s %s, which the chart does not render", s.what, s.targetVersion, s.kind, s.name))
			continue
		}
		if other, ok := scaledBy[s.kind+"/"+s.name]; ok {
			problems = append(problems, fmt.Sprintf("%s and %s both scale %s %s", other, s.what, s.kind, s.name))
		}
		scaledBy[s.kind+"/"+s.name] = s.what
		if s.min < 1 || s.max < s.min {
			problems = append(problems, fmt.Sprintf("%s: replicas %d to %d", s.what, s.min, s.max))
		}
		if target.Replicas != nil {
			problems = append(problems, fmt.Sprintf("%s %s sets replicas although %s scales it", s.kind, s.name, s.what))
		}
		if s.cpu {
			for _, c := range target.Template.Spec.Containers {
				if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
					problems = append(problems, fmt.Sprintf("%s scales on CPU, but container %s of %s requests none", s.what, c.Name, s.name))
				}
			}
		}
	}
	for _, w := range m.workloads() {
		if _, ok := scaledBy[w.Kind+"/"+w.Name]; !ok && (w.Replicas == nil || *w.Replicas < 1) {
			problems = append(problems, fmt.Sprintf("%s %s: no scaler and no replicas", w.Kind, w.Name))
		}
	}
	return problems
}

// checkProbes: every container is probed for liveness and readiness on a
// port it has; a service's probes hit its ops listener where OPS_ADDR says
// it listens (/healthz alive, /readyz ready), nginx's its own /healthz.
func checkProbes(_ string, m *manifest) []string {
	var problems []string
	for _, w := range m.workloads() {
		for _, c := range w.Template.Spec.Containers {
			where := fmt.Sprintf("%s %s container %s", w.Kind, w.Name, c.Name)
			probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
			wantPath := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}
			var opsPort int32
			if goService(c.Name) {
				cfg, _, err := serviceConfig(w, c)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", where, err))
					continue
				}
				opsPort = addrPort(cfg.Ops.Addr)
			} else {
				wantPath = map[string]string{"liveness": "/healthz", "readiness": "/healthz"}
				delete(probes, "startup")
			}
			for kind, p := range probes {
				if p == nil || p.HTTPGet == nil {
					if kind != "startup" || goService(c.Name) {
						problems = append(problems, fmt.Sprintf("%s: no HTTP %s probe", where, kind))
					}
					continue
				}
				port, ok := containerPort(workload{Template: &corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}}, p.HTTPGet.Port)
				switch {
				case !ok:
					problems = append(problems, fmt.Sprintf("%s: %s probe on port %s, which the container does not have", where, kind, p.HTTPGet.Port.String()))
				case opsPort != 0 && port.ContainerPort != opsPort:
					problems = append(problems, fmt.Sprintf("%s: %s probe on port %d, but OPS_ADDR listens on %d", where, kind, port.ContainerPort, opsPort))
				}
				if p.HTTPGet.Path != wantPath[kind] {
					problems = append(problems, fmt.Sprintf("%s: %s probe on %s, want %s", where, kind, p.HTTPGet.Path, wantPath[kind]))
				}
			}
		}
	}
	// nginx's /healthz is a location of its nginx.conf.
	for _, cm := range m.ConfigMaps {
		if conf, ok := cm.Data["nginx.conf"]; ok && !strings.Contains(conf, "location = /healthz") {
			problems = append(problems, fmt.Sprintf("ConfigMap %s: nginx.conf has no location = /healthz for the probes", cm.Name))
		}
	}
	return problems
}

func addrPort(addr string) int32 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return int32(n)
}

// secretPlaceholders stand for the values of the Secret's keys when a
// service's configuration is loaded from the environment the chart gives
// it: the Secret itself is the operator's.
var secretPlaceholders = map[string]string{
	"AUTH_SECRET":           "chartcheck-placeholder-secret-0123456789abcdef",
	"OPENAI_API_KEY":        "sk-chartcheck-placeholder",
	"LLM_FALLBACK_API_KEYS": "sk-chartcheck-fallback",
	"REDIS_URL":             "redis://:chartcheck-placeholder@redis:6379/0",
}

// podName is a name the pods of a workload get, for INSTANCE_ID.
func podName(w workload) string {
	if w.Kind == "StatefulSet" {
		return w.Name + "-0"
	}
	return w.Name + "-7d4b9c6f5-x2x8q"
}

// keyDir holds the key files a service's configuration reads from a
// mounted Secret, made once per test binary and removed by TestMain.
var keyDir = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "chartcheck-keys-")
	if err != nil {
		return "", err
	}
	keyDirMade = dir
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "chartcheck", "use": "sig", "alg": "RS256",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	if err != nil {
		return "", err
	}
	for name, content := range map[string][]byte{
		"public.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"jwks.json":  jwks,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
})

// keyFile stands a generated key in for a file the container reads from a
// mounted Secret: the public key for AUTH_PUBLIC_KEY_FILE, a JWKS for
// AUTH_JWKS_FILE.
func keyFile(w workload, c corev1.Container, name, value string) (string, error) {
	var mount *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		if strings.HasPrefix(value, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		return "", fmt.Errorf("%s=%s is under no volume mount", name, value)
	}
	file := strings.TrimPrefix(value, strings.TrimSuffix(mount.MountPath, "/")+"/")
	found := false
	for _, v := range w.Template.Spec.Volumes {
		if v.Name == mount.Name && v.Secret != nil {
			for _, item := range v.Secret.Items {
				found = found || item.Path == file
			}
		}
	}
	if !found {
		return "", fmt.Errorf("%s=%s: volume %s is no Secret with an item at %s", name, value, mount.Name, file)
	}
	dir, err := keyDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, map[string]string{"AUTH_PUBLIC_KEY_FILE": "public.pem", "AUTH_JWKS_FILE": "jwks.json"}[name]), nil
}

// serviceEnv is the environment a service container gets, with the pod's
// name and the Secret's placeholders filled in. The problems are what the
// chart must not do: a variable twice, a field of the downward API other
// than the pod's name, a Secret key named other than its variable.
func serviceEnv(w workload, c corev1.Container) (map[string]string, []string) {
	env := map[string]string{}
	var problems []string
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			problems = append(problems, fmt.Sprintf("%s set twice", e.Name))
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
			if e.Name == "AUTH_PUBLIC_KEY_FILE" || e.Name == "AUTH_JWKS_FILE" {
				f, err := keyFile(w, c, e.Name, e.Value)
				if err != nil {
					problems = append(problems, err.Error())
				}
				env[e.Name] = f
			}
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName(w)
		case e.ValueFrom.ResourceFieldRef != nil:
			v, err := cpuRequestProcs(c, e)
			if err != nil {
				problems = append(problems, err.Error())
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secretPlaceholders[ref.Key]
			if ref.Key != e.Name || !ok {
				problems = append(problems, fmt.Sprintf("%s comes from Secret key %s: the Secret's keys are the variables' names, one of %v", e.Name, ref.Key, slices.Sorted(maps.Keys(secretPlaceholders))))
			}
			// An optional key is loaded as absent, as when the Secret
			// lacks it: what the service must start with.
			if ref.Optional == nil || !*ref.Optional {
				env[e.Name] = v
			}
		default:
			problems = append(problems, fmt.Sprintf("%s: a valueFrom this test does not know", e.Name))
		}
	}
	return env, problems
}

// cpuRequestProcs is what the downward API gives an environment variable
// from a resourceFieldRef: the only one the chart uses, GOMAXPROCS from the
// container's own CPU request in whole CPUs, rounded up (as the kubelet
// rounds a resource to its divisor).
func cpuRequestProcs(c corev1.Container, e corev1.EnvVar) (string, error) {
	ref := e.ValueFrom.ResourceFieldRef
	if e.Name != "GOMAXPROCS" || ref.Resource != "requests.cpu" || (ref.ContainerName != "" && ref.ContainerName != c.Name) || ref.Divisor.Cmp(resource.MustParse("1")) != 0 {
		return "", fmt.Errorf("%s from %s of container %q with divisor %s: want GOMAXPROCS from this container's requests.cpu, divisor 1", e.Name, ref.Resource, ref.ContainerName, ref.Divisor.String())
	}
	cpu, ok := c.Resources.Requests[corev1.ResourceCPU]
	if !ok || cpu.IsZero() {
		return "", fmt.Errorf("GOMAXPROCS comes from a CPU request the container does not make")
	}
	return strconv.FormatInt((cpu.MilliValue()+999)/1000, 10), nil
}

// goRuntimeEnv are the variables the Go runtime reads: a container may set
// them although no configuration struct does.
var goRuntimeEnv = []string{"GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"}

// serviceConfig loads a service container's configuration from the
// environment the chart gives it, as the service would at start.
func serviceConfig(w workload, c corev1.Container) (*process.Services, map[string]string, error) {
	env, problems := serviceEnv(w, c)
	if len(problems) > 0 {
		return nil, env, fmt.Errorf("environment: %s", strings.Join(problems, "; "))
	}
	s, err := process.Configure(env, c.Name)
	if err != nil {
		return nil, env, fmt.Errorf("the environment does not load: %w", err)
	}
	return s, env, nil
}

// checkEnv: each service container runs its own binary and gets only
// variables its configuration reads (by the configuration structs, not a
// list kept here), which load as the service would load them; secrets come
// from the Secret; INSTANCE_ID is the pod's name, and consumers run where
// that name is stable (a StatefulSet).
func checkEnv(root string, m *manifest) []string {
	var problems []string
	secretNames := map[string]bool{}
	seen := map[string]bool{}
	for _, w := range m.workloads() {
		for _, c := range w.Template.Spec.Containers {
			if !goService(c.Name) {
				continue
			}
			seen[c.Name] = true
			where := fmt.Sprintf("%s %s container %s", w.Kind, w.Name, c.Name)
			bin := "/usr/local/bin/" + c.Name
			if !slices.Equal(c.Command, []string{bin}) {
				problems = append(problems, fmt.Sprintf("%s: command %v, want [%s]", where, c.Command, bin))
			}
			if _, err := os.Stat(filepath.Join(root, "services", c.Name, "main.go")); err != nil {
				problems = append(problems, fmt.Sprintf("%s: no binary services/%s: %v", where, c.Name, err))
			}
			s, env, err := serviceConfig(w, c)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where, err))
				continue
			}
			settings := s.Settings()
			for _, e := range c.Env {
				masked, read := settings[e.Name]
				if !read && !slices.Contains(telemetry.EnvVars, e.Name) && !slices.Contains(goRuntimeEnv, e.Name) {
					problems = append(problems, fmt.Sprintf("%s: sets %s, which %s does not read", where, e.Name, c.Name))
				}
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					secretNames[e.ValueFrom.SecretKeyRef.Name] = true
				}
				if e.ValueFrom == nil && masked == "*****" && !(e.Name == "REDIS_URL" && !hasPassword(env[e.Name])) {
					problems = append(problems, fmt.Sprintf("%s: the secret %s is written in the pod spec; it belongs in the Secret", where, e.Name))
				}
			}
			// Without GOMAXPROCS (and without a CPU limit) Go runs one P per
			// core of the node, whatever the pod requests.
			if _, ok := env["GOMAXPROCS"]; !ok {
				problems = append(problems, fmt.Sprintf("%s: GOMAXPROCS is not set: Go would run as many Ps as the node has cores", where))
			}
			id := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "INSTANCE_ID" })
			if id < 0 || c.Env[id].ValueFrom == nil || c.Env[id].ValueFrom.FieldRef == nil || c.Env[id].ValueFrom.FieldRef.FieldPath != "metadata.name" {
				problems = append(problems, fmt.Sprintf("%s: INSTANCE_ID is not the pod's name", where))
			}
			if c.Name != process.Gateway && w.Kind != "StatefulSet" {
				problems = append(problems, fmt.Sprintf("%s: a consumer in a %s: its pods' names, its static group member ids, change when a pod is replaced", where, w.Kind))
			}
		}
	}
	for _, svc := range process.All() {
		if !seen[svc] {
			problems = append(problems, "no container runs "+svc)
		}
	}
	if len(secretNames) > 1 {
		problems = append(problems, fmt.Sprintf("secrets come from %d Secrets %v, want one", len(secretNames), slices.Sorted(maps.Keys(secretNames))))
	}
	return problems
}

func hasPassword(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return true // cannot tell: treat as secret
	}
	_, set := u.User.Password()
	return set
}

// checkGracePeriods: the kubelet waits for the preStop sleep, then sends
// SIGTERM and waits the rest of the grace period. A service needs
// SHUTDOWN_TIMEOUT and afterDeadline of it, and its drains fit in
// SHUTDOWN_TIMEOUT; nginx needs its worker_shutdown_timeout.
func checkGracePeriods(_ string, m *manifest) []string {
	var problems []string
	for _, w := range m.workloads() {
		spec := w.Template.Spec
		grace := 30 * time.Second // Kubernetes' default
		if spec.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
		}
		for _, c := range spec.Containers {
			var preStop time.Duration
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				if c.Lifecycle.PreStop.Sleep == nil {
					problems = append(problems, fmt.Sprintf("%s %s: preStop is not a sleep", w.Kind, w.Name))
					continue
				}
				preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			}
			if c.Name == process.Gateway && preStop == 0 {
				problems = append(problems, fmt.Sprintf("%s %s: no preStop sleep: the edge may still send new sockets to a gateway that stopped accepting", w.Kind, w.Name))
			}
			var need time.Duration
			var why string
			if goService(c.Name) {
				s, _, err := serviceConfig(w, c)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s %s: %v", w.Kind, w.Name, err))
					continue
				}
				need, why = s.Ops.ShutdownTimeout+afterDeadline, fmt.Sprintf("SHUTDOWN_TIMEOUT %s and %s after it", s.Ops.ShutdownTimeout, afterDeadline)
				drains := map[string]time.Duration{}
				switch c.Name {
				case process.Gateway:
					drains["GATEWAY_DRAIN_TIMEOUT"] = s.GatewayConfigs[0].Drain
				case process.AIConsumer:
					drains["AI_DRAIN_TIMEOUT"] = s.AIConfig.Drain
				case process.Relay:
					drains["RELAY_DRAIN_TIMEOUT"] = s.RelayConfig.Drain
				}
				for name, d := range drains {
					if d > s.Ops.ShutdownTimeout {
						problems = append(problems, fmt.Sprintf("%s %s: %s %s is longer than SHUTDOWN_TIMEOUT %s", w.Kind, w.Name, name, d, s.Ops.ShutdownTimeout))
					}
				}
			} else {
				conf := nginxConf(m)
				mt := regexp.MustCompile(`(?m)^\s*worker_shutdown_timeout\s+(\d+)s;`).FindStringSubmatch(conf)
				if mt == nil {
					problems = append(problems, fmt.Sprintf("%s %s: nginx.conf has no worker_shutdown_timeout in seconds", w.Kind, w.Name))
					continue
				}
				n, _ := strconv.Atoi(mt[1])
				need, why = time.Duration(n)*time.Second, "nginx's worker_shutdown_timeout "+mt[1]+"s"
			}
			if preStop+need > grace {
				problems = append(problems, fmt.Sprintf("%s %s: grace period %s is less than the preStop sleep %s plus %s", w.Kind, w.Name, grace, preStop, why))
			}
		}
	}
	return problems
}

// nginxConf is the nginx.conf of the nginx ConfigMap, if any.
func nginxConf(m *manifest) string {
	for _, cm := range m.ConfigMaps {
		if conf, ok := cm.Data["nginx.conf"]; ok {
			return conf
		}
	}
	return ""
}

// containerOf finds the service container of the workload a scaler targets.
func containerOf(m *manifest, kind, name string) (workload, corev1.Container, bool) {
	for _, w := range m.workloads() {
		if w.Kind == kind && w.Name == name {
			for _, c := range w.Template.Spec.Containers {
				if goService(c.Name) {
					return w, c, true
				}
			}
		}
	}
	return workload{}, corev1.Container{}, false
}

// targetConfig is the loaded configuration of the service a workload
// runs, and the service's name.
func targetConfig(m *manifest, kind, name string) (*process.Services, string, error) {
	w, c, ok := containerOf(m, kind, name)
	if !ok {
		return nil, "", fmt.Errorf("no service workload %s %s", kind, name)
	}
	s, _, err := serviceConfig(w, c)
	return s, c.Name, err
}

// checkScaledObjects: each consumer's ScaledObject measures the lag of the
// group and topic the consumer really uses, on the brokers it uses, and
// never asks for more replicas than the topics have partitions.
func checkScaledObjects(_ string, m *manifest) []string {
	var problems []string
	topics := map[string]string{process.AIConsumer: kafka.TopicIncoming, process.Relay: kafka.TopicResponses}
	for _, so := range m.ScaledObjects {
		s, svc, err := targetConfig(m, so.Spec.ScaleTargetRef.Kind, so.Spec.ScaleTargetRef.Name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("ScaledObject %s: %v", so.Name, err))
			continue
		}
		group := map[string]string{process.AIConsumer: s.AIConfig.Group, process.Relay: s.RelayConfig.Group}[svc]
		kafkaCfg := map[string]string{process.AIConsumer: s.AIConfig.Kafka.Bootstrap, process.Relay: s.RelayConfig.Kafka.Bootstrap}[svc]
		partitions := map[string]int32{process.AIConsumer: s.AIConfig.Kafka.Partitions, process.Relay: s.RelayConfig.Kafka.Partitions}[svc]
		if group == "" {
			problems = append(problems, fmt.Sprintf("ScaledObject %s scales %s, which consumes no group", so.Name, svc))
			continue
		}
		if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount > partitions {
			problems = append(problems, fmt.Sprintf("ScaledObject %s: maxReplicaCount %v, more than the %d partitions (KAFKA_TOPIC_PARTITIONS): the extra members would idle", so.Name, ptrString(so.Spec.MaxReplicaCount), partitions))
		}
		var kafkaTriggers int
		for _, tr := range so.Spec.Triggers {
			switch tr.Type {
			case "kafka":
				kafkaTriggers++
				want := map[string]string{
					"bootstrapServers": kafkaCfg, "consumerGroup": group, "topic": topics[svc],
					"offsetResetPolicy": "earliest", "allowIdleConsumers": "false",
				}
				for k, v := range want {
					if tr.Metadata[k] != v {
						problems = append(problems, fmt.Sprintf("ScaledObject %s: kafka trigger %s=%q, want %q (what %s uses)", so.Name, k, tr.Metadata[k], v, svc))
					}
				}
				if n, err := strconv.Atoi(tr.Metadata["lagThreshold"]); err != nil || n < 1 {
					problems = append(problems, fmt.Sprintf("ScaledObject %s: lagThreshold %q", so.Name, tr.Metadata["lagThreshold"]))
				}
			case "cpu":
				if n, err := strconv.Atoi(tr.Metadata["value"]); err != nil || n < 1 || n > 100 || tr.MetricType != "Utilization" {
					problems = append(problems, fmt.Sprintf("ScaledObject %s: cpu trigger %s %q", so.Name, tr.MetricType, tr.Metadata["value"]))
				}
			default:
				problems = append(problems, fmt.Sprintf("ScaledObject %s: trigger type %q", so.Name, tr.Type))
			}
		}
		if kafkaTriggers != 1 {
			problems = append(problems, fmt.Sprintf("ScaledObject %s: %d kafka triggers, want one", so.Name, kafkaTriggers))
		}
	}
	return problems
}

func ptrString(p *int32) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(int(*p))
}

// capacityAlert is WebSocketConnectionsNearCapacity from alerts/: the
// gauge of open sockets, the gauge of the instance's limit, and the share
// of the limit at which it opens a ticket.
func capacityAlert(root string) (sockets, limit string, ratio float64, err error) {
	groups, err := alertGroups(root)
	if err != nil {
		return "", "", 0, err
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert != "WebSocketConnectionsNearCapacity" {
				continue
			}
			mt := regexp.MustCompile(`^(\w+) / \((\w+) > 0\) > ([0-9.]+)$`).FindStringSubmatch(strings.TrimSpace(r.Expr))
			if mt == nil {
				return "", "", 0, fmt.Errorf("WebSocketConnectionsNearCapacity: expr %q is not <sockets> / (<limit> > 0) > <ratio>", r.Expr)
			}
			ratio, err := strconv.ParseFloat(mt[3], 64)
			return mt[1], mt[2], ratio, err
		}
	}
	return "", "", 0, fmt.Errorf("alerts/ has no WebSocketConnectionsNearCapacity")
}

// checkSocketsTarget: the gateways' HPA, when it scales on sockets per
// pod, reads the gauge the capacity alert reads, and adds pods before the
// average pod reaches the alert's share of LIMIT_INSTANCE_SOCKETS.
func checkSocketsTarget(root string, m *manifest) []string {
	var problems []string
	gauge, _, ratio, err := capacityAlert(root)
	if err != nil {
		return []string{err.Error()}
	}
	for _, h := range m.HPAs {
		for _, mt := range h.Spec.Metrics {
			if mt.Pods == nil {
				continue
			}
			if mt.Pods.Metric.Name != gauge {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %s: scales on %s; the gateways' sockets gauge is %s", h.Name, mt.Pods.Metric.Name, gauge))
			}
			s, svc, err := targetConfig(m, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			if err != nil || svc != process.Gateway {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %s: scales %s on sockets, not the gateways (%v)", h.Name, h.Spec.ScaleTargetRef.Name, err))
				continue
			}
			limit := s.GatewayConfigs[0].Limits.InstanceSockets
			if mt.Pods.Target.AverageValue == nil {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %s: sockets target without an averageValue", h.Name))
				continue
			}
			target := mt.Pods.Target.AverageValue.AsApproximateFloat64()
			if limit > 0 && target >= ratio*float64(limit) {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %s: %v sockets per pod is not below %.0f%% of LIMIT_INSTANCE_SOCKETS %d, where WebSocketConnectionsNearCapacity fires", h.Name, target, ratio*100, limit))
			}
		}
	}
	return problems
}

// checkEdge: the Ingress sends clients to the gateways' Service on its
// HTTP port and keeps sockets open longer than the gateways do; nginx runs
// the repository's nginx.conf, changed only where it names the gateways and
// the DNS server, at the release compose runs.
func checkEdge(root string, m *manifest) []string {
	var problems []string
	service := func(name string) *corev1.Service {
		for _, s := range m.Services {
			if s.Name == name {
				return s
			}
		}
		return nil
	}
	gatewayPod := func(s *corev1.Service) (workload, bool) {
		ws := podsSelected(m, s.Spec.Selector)
		if len(ws) != 1 {
			return workload{}, false
		}
		_, c, ok := containerOf(m, ws[0].Kind, ws[0].Name)
		return ws[0], ok && c.Name == process.Gateway
	}
	for _, ing := range m.Ingresses {
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				s := service(b.Name)
				if s == nil {
					problems = append(problems, fmt.Sprintf("Ingress %s: backend Service %s does not exist", ing.Name, b.Name))
					continue
				}
				if _, ok := gatewayPod(s); !ok {
					problems = append(problems, fmt.Sprintf("Ingress %s: Service %s is not the gateways'", ing.Name, s.Name))
				}
				if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name && sp.Name == "http" }) {
					problems = append(problems, fmt.Sprintf("Ingress %s: port %q of Service %s is not its http port", ing.Name, b.Port.Name, s.Name))
				}
			}
		}
		if ing.Spec.IngressClassName != nil && *ing.Spec.IngressClassName == "nginx" {
			backend := service(ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name)
			if backend == nil {
				continue
			}
			w, ok := gatewayPod(backend)
			if !ok {
				continue
			}
			s, _, err := targetConfig(m, w.Kind, w.Name)
			if err != nil {
				problems = append(problems, fmt.Sprintf("Ingress %s: %v", ing.Name, err))
				continue
			}
			pong := s.GatewayConfigs[0].PongTimeout
			for _, a := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
				n, err := strconv.Atoi(ing.Annotations[a])
				if err != nil || time.Duration(n)*time.Second <= pong {
					problems = append(problems, fmt.Sprintf("Ingress %s: %s %q: ingress-nginx would cut an idle socket the gateways keep (WS_PONG_TIMEOUT %s)", ing.Name, a, ing.Annotations[a], pong))
				}
			}
		}
	}

	conf := nginxConf(m)
	if conf == "" {
		return problems
	}
	repo, err := os.ReadFile(filepath.Join(root, "nginx", "nginx.conf"))
	if err != nil {
		return append(problems, err.Error())
	}
	var servers []string
	changeable := regexp.MustCompile(`^(server \S+ max_fails=0 resolve|resolver \S+ valid=10s);$`)
	for _, d := range lineDiff(string(repo), conf) {
		added, text := d[0] == '+', strings.TrimSpace(d[1:])
		switch {
		case !changeable.MatchString(text):
			problems = append(problems, fmt.Sprintf("nginx.conf differs from nginx/nginx.conf beyond its upstream servers and resolver: %q", d))
		case added && strings.HasPrefix(text, "server "):
			servers = append(servers, text)
		}
	}
	if len(servers) != 1 {
		return append(problems, fmt.Sprintf("nginx.conf: upstream servers %q, want the gateways' headless Service", servers))
	}
	hostPort := strings.Fields(servers[0])[1]
	host, port, _ := net.SplitHostPort(hostPort)
	svcName, ns, _ := strings.Cut(host, ".")
	s := service(svcName)
	switch {
	case s == nil:
		problems = append(problems, fmt.Sprintf("nginx.conf: upstream %s: no Service %s", hostPort, svcName))
	case s.Spec.ClusterIP != corev1.ClusterIPNone:
		problems = append(problems, fmt.Sprintf("nginx.conf: upstream Service %s is not headless: nginx would balance one address", svcName))
	case !strings.HasPrefix(ns, namespace+".svc."):
		problems = append(problems, fmt.Sprintf("nginx.conf: upstream %s is not in the release's namespace %s", host, namespace))
	default:
		w, ok := gatewayPod(s)
		if !ok {
			problems = append(problems, fmt.Sprintf("nginx.conf: upstream Service %s is not the gateways'", svcName))
			break
		}
		if p, ok := containerPort(w, intstr.FromString("http")); !ok || strconv.Itoa(int(p.ContainerPort)) != port {
			problems = append(problems, fmt.Sprintf("nginx.conf: upstream port %s is not the gateways' http port %d", port, p.ContainerPort))
		}
	}
	composeImage, err := composeNginxImage(root)
	if err != nil {
		return append(problems, err.Error())
	}
	for _, d := range m.Deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != "nginx" {
				continue
			}
			if c.Image != composeImage {
				problems = append(problems, fmt.Sprintf("Deployment %s: nginx image %s, compose runs %s (change both together)", d.Name, c.Image, composeImage))
			}
			if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
				return vm.MountPath == "/etc/nginx/nginx.conf" && vm.SubPath == "nginx.conf"
			}) {
				problems = append(problems, fmt.Sprintf("Deployment %s: nginx.conf is not mounted at /etc/nginx/nginx.conf", d.Name))
			}
		}
	}
	return problems
}

// lineDiff lists the lines only in a ("-line") and only in b ("+line"),
// by a longest common subsequence of lines.
func lineDiff(a, b string) []string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	// lcs[i][j]: the longest common subsequence of al[i:] and bl[j:].
	lcs := make([][]int, len(al)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(bl)+1)
	}
	for i := len(al) - 1; i >= 0; i-- {
		for j := len(bl) - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(al) || j < len(bl) {
		switch {
		case i < len(al) && j < len(bl) && al[i] == bl[j]:
			i, j = i+1, j+1
		case j < len(bl) && (i == len(al) || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+"+bl[j])
			j++
		default:
			out = append(out, "-"+al[i])
			i++
		}
	}
	return out
}

func composeNginxImage(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		return "", err
	}
	var compose struct {
		Services map[string]struct {
			Image string `json:"image"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		return "", fmt.Errorf("docker-compose.yml: %w", err)
	}
	return compose.Services["nginx"].Image, nil
}

// checkServiceMonitor: the ServiceMonitor scrapes each service's ops port
// through exactly one Service, names the job after the service (the job
// the alerts select on) and the instance after the pod.
func checkServiceMonitor(root string, m *manifest) []string {
	var problems []string
	jobs, err := targetDownJobs(root)
	if err != nil {
		return []string{err.Error()}
	}
	for _, sm := range m.ServiceMonitors {
		scraped := map[string][]string{}
		for _, ep := range sm.Spec.Endpoints {
			for _, s := range m.Services {
				if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) ||
					!slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					continue
				}
				job := s.Labels[sm.Spec.JobLabel]
				scraped[job] = append(scraped[job], s.Name)
				if ws := podsSelected(m, s.Spec.Selector); len(ws) == 1 {
					if _, c, ok := containerOf(m, ws[0].Kind, ws[0].Name); !ok || c.Name != job {
						problems = append(problems, fmt.Sprintf("ServiceMonitor %s: Service %s has job %q but selects %s", sm.Name, s.Name, job, ws[0].Name))
					}
				}
			}
			if ep.Path != "/metrics" {
				problems = append(problems, fmt.Sprintf("ServiceMonitor %s: path %s", sm.Name, ep.Path))
			}
			if !slices.ContainsFunc(ep.Relabelings, func(r relabeling) bool {
				return r.TargetLabel == "instance" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_name"})
			}) {
				problems = append(problems, fmt.Sprintf("ServiceMonitor %s: the instance label is not the pod's name", sm.Name))
			}
		}
		for _, svc := range process.All() {
			if len(scraped[svc]) != 1 {
				problems = append(problems, fmt.Sprintf("ServiceMonitor %s: %s scraped through %v, want one Service", sm.Name, svc, scraped[svc]))
			}
			if !jobs.MatchString(svc) {
				problems = append(problems, fmt.Sprintf("ServiceMonitor %s: job %s is not one TargetDown watches (%s)", sm.Name, svc, jobs))
			}
		}
		for job := range scraped {
			if !goService(job) {
				problems = append(problems, fmt.Sprintf("ServiceMonitor %s: scrapes %v as job %q", sm.Name, scraped[job], job))
			}
		}
	}
	return problems
}

// targetDownJobs is the job matcher of the TargetDown alert, anchored as
// Prometheus anchors it.
func targetDownJobs(root string) (*regexp.Regexp, error) {
	groups, err := alertGroups(root)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert != "TargetDown" {
				continue
			}
			mt := regexp.MustCompile(`job=~"([^"]+)"`).FindStringSubmatch(r.Expr)
			if mt == nil {
				return nil, fmt.Errorf("TargetDown: no job=~ matcher in %q", r.Expr)
			}
			return regexp.Compile("^(?:" + mt[1] + ")$")
		}
	}
	return nil, fmt.Errorf("alerts/ has no TargetDown")
}

// alertGroups reads the rule groups of alerts/*.yml, strictly, in file
// name order (the order the chart's .Files.Glob gives).
func alertGroups(root string) ([]ruleGroup, error) {
	files, err := filepath.Glob(filepath.Join(root, "alerts", "*.yml"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var groups []ruleGroup
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Groups []ruleGroup `json:"groups"`
		}
		if err := yaml.UnmarshalStrict(b, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w (a rule field the PrometheusRule check does not know: add it to type rule)", path.Base(f), err)
		}
		groups = append(groups, doc.Groups...)
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("alerts/*.yml: no rule groups")
	}
	return groups, nil
}

// checkPrometheusRule: the PrometheusRule's groups are alerts/*.yml's,
// every field equal.
func checkPrometheusRule(root string, m *manifest) []string {
	want, err := alertGroups(root)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	for _, pr := range m.PrometheusRules {
		got := pr.Spec.Groups
		if len(got) != len(want) {
			problems = append(problems, fmt.Sprintf("PrometheusRule %s: %d groups, alerts/ has %d", pr.Name, len(got), len(want)))
			continue
		}
		for i := range want {
			g, w := mustJSON(got[i]), mustJSON(want[i])
			if !bytes.Equal(g, w) {
				problems = append(problems, fmt.Sprintf("PrometheusRule %s: group %d (%s) differs from alerts/:\n  rule: %s\n  file: %s", pr.Name, i, want[i].Name, g, w))
			}
		}
	}
	return problems
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// checkDashboards: the ConfigMaps labelled for Grafana's sidecar hold
// dashboards/*.json, each once, byte for byte.
func checkDashboards(root string, m *manifest) []string {
	var problems []string
	files, err := filepath.Glob(filepath.Join(root, "dashboards", "*.json"))
	if err != nil {
		return []string{err.Error()}
	}
	want := map[string][]byte{}
	for _, f := range files {
		if want[filepath.Base(f)], err = os.ReadFile(f); err != nil {
			return []string{err.Error()}
		}
	}
	got := map[string]string{}
	n := 0
	for _, cm := range m.ConfigMaps {
		if _, ok := cm.Labels["grafana_dashboard"]; !ok {
			continue
		}
		n++
		for k, v := range cm.Data {
			if _, dup := got[k]; dup {
				problems = append(problems, fmt.Sprintf("ConfigMap %s: %s in two ConfigMaps", cm.Name, k))
			}
			got[k] = v
		}
	}
	if n == 0 {
		return problems // dashboards off: the cases count the ConfigMaps
	}
	for name, content := range want {
		switch g, ok := got[name]; {
		case !ok:
			problems = append(problems, fmt.Sprintf("dashboards/%s is in no ConfigMap", name))
		case g != string(content):
			problems = append(problems, fmt.Sprintf("the ConfigMap's %s differs from dashboards/%s", name, name))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			problems = append(problems, fmt.Sprintf("ConfigMap data %s is no file of dashboards/", name))
		}
	}
	return problems
}

// keyDirMade is keyDir's directory once made ("" before).
var keyDirMade string

func TestMain(m *testing.M) {
	code := m.Run()
	if keyDirMade != "" {
		_ = os.RemoveAll(keyDirMade)
	}
	os.Exit(code)
}
