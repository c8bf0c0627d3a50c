package chartcheck

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/chatrelay/chat/internal/testinfra"
)

// The checks find what they are for: each case breaks one thing in a
// rendered manifest and expects its check to say so.

func deployment(m *manifest, comp string) *appsv1.Deployment {
	for _, d := range m.Deployments {
		if component(d.ObjectMeta) == comp {
			return d
		}
	}
	panic("no Deployment of " + comp)
}

func gatewayDeployment(m *manifest) *corev1.PodTemplateSpec {
	return &deployment(m, "websocket-server").Spec.Template
}

func scaledObjectOf(m *manifest, comp string) *scaledObject {
	for _, so := range m.ScaledObjects {
		if component(so.ObjectMeta) == comp {
			return so
		}
	}
	panic("no ScaledObject of " + comp)
}

// configData is the data of the ConfigMap that holds key.
func configData(m *manifest, key string) map[string]string {
	for _, cm := range m.ConfigMaps {
		if _, ok := cm.Data[key]; ok {
			return cm.Data
		}
	}
	panic("no ConfigMap holds " + key)
}

func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i] = corev1.EnvVar{Name: name, Value: value}
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

func unsetEnv(c *corev1.Container, name string) {
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	panic("no " + name + " in " + c.Name)
}

func TestChecksCatchDrift(t *testing.T) {
	root := testinfra.RepoRoot(t)
	out := map[string]string{}
	for _, c := range []chartCase{cases[1], cases[2]} {
		o, err := helm(t, c.templateArgs(".")...)
		if err != nil {
			t.Fatal(err)
		}
		out[c.values] = o
	}
	gw := func(m *manifest) *corev1.Container { return &gatewayDeployment(m).Spec.Containers[0] }
	relay := func(m *manifest) *corev1.Container {
		for _, s := range m.StatefulSets {
			if component(s.ObjectMeta) == "message-relay" {
				return &s.Spec.Template.Spec.Containers[0]
			}
		}
		panic("no relay")
	}
	tests := []struct {
		name   string
		values string // the case's ci/ file; default-values.yaml if empty
		check  string
		break_ func(m *manifest)
		want   string
	}{
		{"a Service selects no pods", "", "selectors match the pods",
			func(m *manifest) { m.Services[0].Spec.Selector[componentLabel] = "gateway" }, "the pods of 0 workloads"},
		{"a Service port targets nothing", "", "selectors match the pods",
			func(m *manifest) { m.Services[0].Spec.Ports[0].TargetPort = intstr.FromString("metrics") }, "has no container port"},
		{"a workload without a budget", "", "selectors match the pods",
			func(m *manifest) { m.PDBs = m.PDBs[1:] }, "has no PodDisruptionBudget"},
		{"an HPA scales what is not there", "", "scalers target the workloads",
			func(m *manifest) { m.HPAs[0].Spec.ScaleTargetRef.Name = "gateway" }, "which the chart does not render"},
		{"a scaled Deployment sets replicas", "", "scalers target the workloads",
			func(m *manifest) { two := int32(2); deployment(m, "websocket-server").Spec.Replicas = &two }, "sets replicas although"},
		{"CPU scaling without CPU requests", "", "scalers target the workloads",
			func(m *manifest) { delete(gw(m).Resources.Requests, corev1.ResourceCPU) }, "requests none"},
		{"readiness on /healthz", "", "probes hit the ops port",
			func(m *manifest) { gw(m).ReadinessProbe.HTTPGet.Path = "/healthz" }, "want /readyz"},
		{"a probe on a port the container lacks", "", "probes hit the ops port",
			func(m *manifest) { gw(m).LivenessProbe.HTTPGet.Port = intstr.FromString("metrics") }, "which the container does not have"},
		{"the ops listener elsewhere", "", "probes hit the ops port",
			func(m *manifest) { setEnv(gw(m), "OPS_ADDR", ":9191") }, "OPS_ADDR listens on 9191"},
		{"a variable no configuration reads", "", "environment is the services' configuration",
			func(m *manifest) { setEnv(relay(m), "KAFKA_BROKERS", "kafka:9092") }, "sets KAFKA_BROKERS, which message-relay does not read"},
		{"a variable of another service", "", "environment is the services' configuration",
			func(m *manifest) { setEnv(relay(m), "HTTP_ADDR", ":8080") }, "sets HTTP_ADDR, which message-relay does not read"},
		{"a value the service refuses", "", "environment is the services' configuration",
			func(m *manifest) { setEnv(relay(m), "KAFKA_TOPIC_PARTITIONS", "0") }, "KAFKA_TOPIC_PARTITIONS"},
		{"a secret in the pod spec", "", "environment is the services' configuration",
			func(m *manifest) { setEnv(gw(m), "AUTH_SECRET", "0123456789abcdef0123") }, "the secret AUTH_SECRET is written in the pod spec"},
		{"a Redis password in the pod spec", "", "environment is the services' configuration",
			func(m *manifest) { setEnv(relay(m), "REDIS_URL", "redis://:pw@redis:6379/0") }, "the secret REDIS_URL"},
		{"GOMAXPROCS not set", "", "environment is the services' configuration",
			func(m *manifest) { unsetEnv(relay(m), "GOMAXPROCS") }, "GOMAXPROCS is not set"},
		{"GOMAXPROCS from the CPU limit", "", "environment is the services' configuration",
			func(m *manifest) { envVar(gw(m), "GOMAXPROCS").ValueFrom.ResourceFieldRef.Resource = "limits.cpu" }, "want GOMAXPROCS from this container's requests.cpu"},
		{"GOMAXPROCS in millicores", "", "environment is the services' configuration",
			func(m *manifest) {
				envVar(gw(m), "GOMAXPROCS").ValueFrom.ResourceFieldRef.Divisor = resource.MustParse("1m")
			}, "divisor 1m"},
		{"one INSTANCE_ID for every pod", "", "environment is the services' configuration",
			func(m *manifest) { setEnv(relay(m), "INSTANCE_ID", "relay") }, "INSTANCE_ID is not the pod's name"},
		{"a consumer in a Deployment", "", "environment is the services' configuration",
			func(m *manifest) {
				// As the chart would render it: the container's name is also
				// the one its GOMAXPROCS reads the request of.
				gw(m).Name = "message-relay"
				envVar(gw(m), "GOMAXPROCS").ValueFrom.ResourceFieldRef.ContainerName = "message-relay"
			}, "a consumer in a Deployment"},
		{"a short grace period", "", "grace period covers preStop and shutdown",
			func(m *manifest) { s := int64(30); gatewayDeployment(m).Spec.TerminationGracePeriodSeconds = &s }, "grace period 30s is less than"},
		{"a longer SHUTDOWN_TIMEOUT", "", "grace period covers preStop and shutdown",
			func(m *manifest) { setEnv(relay(m), "SHUTDOWN_TIMEOUT", "60s") }, "SHUTDOWN_TIMEOUT 1m0s"},
		{"a drain longer than the shutdown", "", "grace period covers preStop and shutdown",
			func(m *manifest) { setEnv(gw(m), "GATEWAY_DRAIN_TIMEOUT", "30s") }, "GATEWAY_DRAIN_TIMEOUT 30s is longer than SHUTDOWN_TIMEOUT"},
		{"no preStop on the gateways", "", "grace period covers preStop and shutdown",
			func(m *manifest) { gw(m).Lifecycle = nil }, "no preStop sleep"},
		{"more consumers than partitions", "", "consumers scale on their group within the partitions",
			func(m *manifest) { n := int32(13); scaledObjectOf(m, "ai-consumer").Spec.MaxReplicaCount = &n }, "more than the 12 partitions"},
		{"the lag of another topic", "", "consumers scale on their group within the partitions",
			func(m *manifest) { scaledObjectOf(m, "ai-consumer").Spec.Triggers[0].Metadata["topic"] = "responses" }, `topic="responses", want "incoming_messages"`},
		{"the lag of another group", "", "consumers scale on their group within the partitions",
			func(m *manifest) {
				scaledObjectOf(m, "message-relay").Spec.Triggers[0].Metadata["consumerGroup"] = "relay"
			}, `consumerGroup="relay", want "message-relay"`},
		{"sockets target at the capacity alert", "", "the sockets target is below the capacity alert",
			func(m *manifest) {
				q := resource.MustParse("17000")
				m.HPAs[0].Spec.Metrics[1].Pods.Target.AverageValue = &q
			}, "is not below 85% of LIMIT_INSTANCE_SOCKETS 20000"},
		{"sockets target over a lowered limit", "", "the sockets target is below the capacity alert",
			func(m *manifest) { setEnv(gw(m), "LIMIT_INSTANCE_SOCKETS", "10000") }, "LIMIT_INSTANCE_SOCKETS 10000"},
		{"scaling on another gauge", "", "the sockets target is below the capacity alert",
			func(m *manifest) { m.HPAs[0].Spec.Metrics[1].Pods.Metric.Name = "chat_ws_connects_total" }, "the gateways' sockets gauge is chat_ws_connections"},
		{"nginx.conf changed beyond the upstreams", "", "the edge reaches the gateways",
			func(m *manifest) {
				d := configData(m, "nginx.conf")
				d["nginx.conf"] = strings.Replace(d["nginx.conf"], "limit_conn ws_conns 100;", "limit_conn ws_conns 1000;", 1)
			}, "beyond its upstream servers and resolver"},
		{"nginx upstream on the ClusterIP Service", "", "the edge reaches the gateways",
			func(m *manifest) {
				d := configData(m, "nginx.conf")
				d["nginx.conf"] = strings.Replace(d["nginx.conf"], "websocket-server-pods.", "websocket-server.", 1)
			}, "is not headless"},
		{"nginx upstream on another port", "", "the edge reaches the gateways",
			func(m *manifest) {
				d := configData(m, "nginx.conf")
				d["nginx.conf"] = strings.Replace(d["nginx.conf"], ".cluster.local:8080", ".cluster.local:8081", 1)
			}, "upstream port 8081"},
		{"another nginx than compose's", "", "the edge reaches the gateways",
			func(m *manifest) {
				deployment(m, "nginx").Spec.Template.Spec.Containers[0].Image = "nginx:1.29.0-alpine"
			}, "compose runs nginx:1.28.0-alpine"},
		{"an Ingress timeout below the pong timeout", "ingress-values.yaml", "the edge reaches the gateways",
			func(m *manifest) { m.Ingresses[0].Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "60" }, "would cut an idle socket"},
		{"an Ingress to the wrong port", "ingress-values.yaml", "the edge reaches the gateways",
			func(m *manifest) { m.Ingresses[0].Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name = "ops" }, `port "ops"`},
		{"a job the alerts do not know", "", "the ServiceMonitor scrapes each service once, as its job",
			func(m *manifest) { m.ServiceMonitors[0].Spec.JobLabel = "app.kubernetes.io/instance" }, `as job "chat"`},
		{"the gateways scraped twice", "", "the ServiceMonitor scrapes each service once, as its job",
			func(m *manifest) {
				for _, s := range m.Services {
					if strings.HasSuffix(s.Name, "-pods") {
						s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "ops", Port: 9090, TargetPort: intstr.FromString("ops")})
					}
				}
			}, "websocket-server scraped through"},
		{"a rule changed", "", "the PrometheusRule is alerts/",
			func(m *manifest) { m.PrometheusRules[0].Spec.Groups[0].Rules[0].For = "1m" }, "differs from alerts/"},
		{"a group missing", "", "the PrometheusRule is alerts/",
			func(m *manifest) { g := m.PrometheusRules[0].Spec.Groups; m.PrometheusRules[0].Spec.Groups = g[1:] }, "groups, alerts/ has"},
		{"a dashboard changed", "", "the dashboards are dashboards/",
			func(m *manifest) { configData(m, "ai-consumer.json")["ai-consumer.json"] += " " }, "differs from dashboards/ai-consumer.json"},
		{"a dashboard missing", "", "the dashboards are dashboards/",
			func(m *manifest) { delete(configData(m, "overview.json"), "overview.json") }, "dashboards/overview.json is in no ConfigMap"},
		{"a label value too long", "", "names and labels are valid",
			func(m *manifest) { m.Services[0].Labels["app.kubernetes.io/version"] = strings.Repeat("v", 64) }, "must be no more than 63"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := tc.values
			if values == "" {
				values = "default-values.yaml"
			}
			m, err := decodeManifest([]byte(out[values]))
			if err != nil {
				t.Fatal(err)
			}
			var ch *check
			for i := range checks {
				if checks[i].name == tc.check {
					ch = &checks[i]
				}
			}
			if ch == nil {
				t.Fatalf("no check %q", tc.check)
			}
			if p := ch.check(root, m); len(p) > 0 {
				t.Fatalf("the unbroken manifest fails: %v", p)
			}
			tc.break_(m)
			problems := strings.Join(ch.check(root, m), "\n")
			if !strings.Contains(problems, tc.want) {
				t.Fatalf("want a problem containing %q, got:\n%s", tc.want, problems)
			}
		})
	}
}

// What the API server refuses, the decoding refuses.
func TestDecodeIsStrict(t *testing.T) {
	const svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 80\n"
	if _, err := decodeManifest([]byte("# Source: chat/templates/x.yaml\n" + svc)); err != nil {
		t.Fatalf("a valid Service: %v", err)
	}
	for name, doc := range map[string]string{
		"unknown field":        strings.Replace(svc, "  ports:", "  selectr: {a: b}\n  ports:", 1),
		"field in other case":  strings.Replace(svc, "    - port: 80", "    - Port: 80", 1),
		"duplicate key":        svc + "  type: ClusterIP\n  type: NodePort\n",
		"wrong type":           strings.Replace(svc, "port: 80", "port: eighty", 1),
		"unknown kind":         strings.Replace(svc, "kind: Service", "kind: Servce", 1),
		"no name":              strings.Replace(svc, "  name: x\n", "  labels: {a: b}\n", 1),
		"CRD field misspelled": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec:\n  maxReplicas: 3\n",
		"rendered twice":       svc + "---\n" + svc,
	} {
		if _, err := decodeManifest([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}
