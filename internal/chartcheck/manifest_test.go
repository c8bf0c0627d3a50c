package chartcheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The custom resources the chart renders have no Go types in k8s.io/api.
// These carry exactly the fields the chart uses, named as the CRDs name
// them (ServiceMonitor and PrometheusRule: monitoring.coreos.com/v1 of the
// Prometheus Operator; ScaledObject: keda.sh/v1alpha1 of KEDA), so a
// misspelled or misplaced field fails the strict decode as it would fail
// the API server's schema.

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel  string               `json:"jobLabel"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port        string       `json:"port"`
			Path        string       `json:"path"`
			Interval    string       `json:"interval"`
			Relabelings []relabeling `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type relabeling struct {
	SourceLabels []string `json:"sourceLabels"`
	TargetLabel  string   `json:"targetLabel"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"spec"`
}

// ruleGroup is a Prometheus rule group as alerts/*.yml writes it; the
// PrometheusRule's groups have the same fields.
type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type              string            `json:"type"`
			MetricType        string            `json:"metricType"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

// manifest is what one `helm template` rendered, each object decoded into
// its type.
type manifest struct {
	Deployments     []*appsv1.Deployment
	StatefulSets    []*appsv1.StatefulSet
	Services        []*corev1.Service
	ConfigMaps      []*corev1.ConfigMap
	HPAs            []*autoscalingv2.HorizontalPodAutoscaler
	PDBs            []*policyv1.PodDisruptionBudget
	Ingresses       []*networkingv1.Ingress
	ServiceMonitors []*serviceMonitor
	PrometheusRules []*prometheusRule
	ScaledObjects   []*scaledObject
}

// kinds maps each apiVersion/kind the chart may render to a new object of
// its type and where it goes in the manifest. Anything else is an error:
// the chart renders nothing this test cannot check.
var kinds = map[string]func(m *manifest) any{
	"apps/v1/Deployment":                      func(m *manifest) any { return add(&m.Deployments) },
	"apps/v1/StatefulSet":                     func(m *manifest) any { return add(&m.StatefulSets) },
	"v1/Service":                              func(m *manifest) any { return add(&m.Services) },
	"v1/ConfigMap":                            func(m *manifest) any { return add(&m.ConfigMaps) },
	"autoscaling/v2/HorizontalPodAutoscaler":  func(m *manifest) any { return add(&m.HPAs) },
	"policy/v1/PodDisruptionBudget":           func(m *manifest) any { return add(&m.PDBs) },
	"networking.k8s.io/v1/Ingress":            func(m *manifest) any { return add(&m.Ingresses) },
	"monitoring.coreos.com/v1/ServiceMonitor": func(m *manifest) any { return add(&m.ServiceMonitors) },
	"monitoring.coreos.com/v1/PrometheusRule": func(m *manifest) any { return add(&m.PrometheusRules) },
	"keda.sh/v1alpha1/ScaledObject":           func(m *manifest) any { return add(&m.ScaledObjects) },
}

func add[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

// decodeManifest splits a multi-document YAML stream and decodes every
// object strictly: duplicate keys, unknown fields and fields of the wrong
// type or case are errors, as they are for the API server.
func decodeManifest(out []byte) (*manifest, error) {
	m := &manifest{}
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	seen := map[string]bool{}
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source(doc), err)
		}
		var tm struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
			return nil, fmt.Errorf("%s: %w", source(doc), err)
		}
		key := tm.APIVersion + "/" + tm.Kind
		newObj, ok := kinds[key]
		if !ok {
			return nil, fmt.Errorf("%s: %s %s is a kind this test does not check", source(doc), key, tm.Metadata.Name)
		}
		if tm.Metadata.Name == "" {
			return nil, fmt.Errorf("%s: %s without a name", source(doc), key)
		}
		if seen[key+"/"+tm.Metadata.Name] {
			return nil, fmt.Errorf("%s: %s %s rendered twice", source(doc), key, tm.Metadata.Name)
		}
		seen[key+"/"+tm.Metadata.Name] = true
		strict, err := json.UnmarshalStrict(j, newObj(m))
		if err == nil {
			err = errors.Join(strict...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", source(doc), tm.Kind, tm.Metadata.Name, err)
		}
	}
}

// source is the "# Source: chat/templates/x.yaml" line Helm puts above
// each object, for messages.
func source(doc []byte) string {
	for _, l := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(l, "# Source: "); ok {
			return s
		}
	}
	return "(no source line)"
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// workload is a Deployment or StatefulSet, seen the same way.
type workload struct {
	Kind, Name string
	Replicas   *int32
	Selector   *metav1.LabelSelector
	Template   *corev1.PodTemplateSpec
}

func (m *manifest) workloads() []workload {
	var out []workload
	for _, d := range m.Deployments {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Replicas, d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range m.StatefulSets {
		out = append(out, workload{"StatefulSet", s.Name, s.Spec.Replicas, s.Spec.Selector, &s.Spec.Template})
	}
	return out
}

// component is an object's app.kubernetes.io/component label.
func component(meta metav1.ObjectMeta) string { return meta.Labels[componentLabel] }

const componentLabel = "app.kubernetes.io/component"
