package deploycheck

import (
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// What the upstream images of the observability overlay offer a
// healthcheck, read from their Dockerfiles at the pinned versions: Tempo
// (gcr.io/distroless/static-debian12:debug) and Loki
// (gcr.io/distroless/static:debug) ship busybox in /busybox; the
// OpenTelemetry Collector (contrib) is FROM scratch and ships nothing, so
// observability/images adds a static busybox at /usr/local/bin/busybox.
//
// Defect: text and compose said Tempo and Loki shipped no shell and rebuilt
// them with a busybox they already had.
var healthcheckToolDir = map[string]string{
	"grafana/tempo":                        "/busybox/",
	"grafana/loki":                         "/busybox/",
	"otel/opentelemetry-collector-contrib": "", // nothing: rebuilt
}

const addedBusybox = "/usr/local/bin/busybox"

// baseImage is the image a service runs: its image, or the BASE_IMAGE
// build argument when it is built on top of one.
func baseImage(s types.ServiceConfig) string {
	if s.Build != nil {
		if v := s.Build.Args["BASE_IMAGE"]; v != nil && *v != "" {
			return *v
		}
	}
	return s.Image
}

func checkImageHealthcheckTools(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		repo, _, _ := strings.Cut(baseImage(s), ":")
		dir, known := healthcheckToolDir[repo]
		if !known || !hasHealthcheck(s) || len(s.HealthCheck.Test) < 2 {
			continue
		}
		bin := s.HealthCheck.Test[1]
		built := s.Build != nil
		switch {
		case dir == "" && (!built || bin != addedBusybox):
			t.Errorf("%s: %s ships no shell or HTTP client: build it with observability/images and check with %s (healthcheck runs %q)", s.Name, repo, addedBusybox, bin)
		case dir != "" && built:
			t.Errorf("%s: %s already ships busybox in %s: run the upstream image, do not rebuild it", s.Name, repo, dir)
		case dir != "" && !strings.HasPrefix(bin, dir):
			t.Errorf("%s: healthcheck runs %q, but %s ships its tools in %s", s.Name, bin, repo, dir)
		}
	}
}

// The apache/kafka image writes every KAFKA_* variable into
// server.properties except those on its exclusion list, which misspells
// KAFKA_HEAP_OPTS ("KAFKA_HEAP_OPT"); and a healthcheck runs with the
// container's environment, so JVM options meant for the broker went to every
// healthcheck JVM too.
//
// Defect: KAFKA_HEAP_OPTS=-Xms512m -Xmx512m became a heap.opts broker
// property, and each healthcheck (every 10 s) started a JVM with a 512 MB
// heap.
var kafkaJVMOptions = []string{"KAFKA_OPTS", "KAFKA_HEAP_OPTS"}

func checkKafkaJVMOptions(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		if repo, _, _ := strings.Cut(baseImage(s), ":"); repo != "apache/kafka" {
			continue
		}
		if _, ok := s.Environment["KAFKA_HEAP_OPTS"]; ok {
			t.Errorf("%s: KAFKA_HEAP_OPTS is written into server.properties by the image; set the broker's heap in KAFKA_OPTS", s.Name)
		}
		if !hasHealthcheck(s) || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "/opt/kafka/bin/") {
			continue
		}
		cmd := strings.Join(s.HealthCheck.Test[1:], " ")
		for _, v := range kafkaJVMOptions {
			if _, set := s.Environment[v]; set && !strings.Contains(cmd, v+"=") {
				t.Errorf("%s: the healthcheck's JVM inherits the broker's %s; set it in the healthcheck command", s.Name, v)
			}
		}
	}
}
