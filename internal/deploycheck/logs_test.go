package deploycheck

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// Defect: lines that are not the services' JSON (a panic's stack trace,
// anything printed before the logger starts) reached Loki with no `service`
// label (service_name="unknown_service"), so the service dashboards never
// showed a crash. The container's service is known where the lines are
// collected: the fluentd logging driver adds the container label `service`
// to every record, the collector's fluentforward receiver makes record
// fields attributes, and the logs pipeline groups by `service` into the
// resource Loki indexes.

const (
	serviceLabel        = "service"
	collectorConfigPath = "observability/otel-collector/config.yml"
)

func checkLogsLabelledByService(t *testing.T, root string, p *types.Project) {
	shipped := 0
	for _, s := range sortedServices(p) {
		if s.Logging == nil || s.Logging.Driver != "fluentd" {
			continue
		}
		shipped++
		// The services write text instead of JSON to a terminal
		// (internal/telemetry), which the collector cannot parse.
		if s.Tty {
			t.Errorf("%s: tty: true makes the service log text, not the JSON lines the collector parses", s.Name)
		}
		opt := strings.Split(s.Logging.Options["labels"], ",")
		if !slices.Contains(opt, serviceLabel) {
			t.Errorf("%s: logging option labels=%q does not send the container label %q with each line", s.Name, s.Logging.Options["labels"], serviceLabel)
		}
		label := s.Labels[serviceLabel]
		if label == "" {
			t.Errorf("%s: no container label %q for the logging driver to send", s.Name, serviceLabel)
		} else if v := s.Environment["OTEL_SERVICE_NAME"]; v != nil && *v != label {
			t.Errorf("%s: label %s=%q, but its lines and spans say service %q", s.Name, serviceLabel, label, *v)
		}
	}
	if shipped > 0 {
		checkCollectorGroupsByService(t, root)
	}
}

// collectorConfig is the part of the collector's config this check reads.
type collectorConfig struct {
	Processors map[string]struct {
		Keys []string `yaml:"keys"`
	} `yaml:"processors"`
	Service struct {
		Pipelines map[string]struct {
			Receivers  []string `yaml:"receivers"`
			Processors []string `yaml:"processors"`
		} `yaml:"pipelines"`
	} `yaml:"service"`
}

// checkCollectorGroupsByService: the logs pipeline that receives the
// driver's records moves the `service` attribute into the resource (Loki
// indexes resource attributes only).
func checkCollectorGroupsByService(t *testing.T, root string) {
	t.Helper()
	var c collectorConfig
	readYAML(t, filepath.Join(root, collectorConfigPath), &c)
	for name, pl := range c.Service.Pipelines {
		if !strings.HasPrefix(name, "logs") || !slices.ContainsFunc(pl.Receivers, isFluentForward) {
			continue
		}
		if !slices.ContainsFunc(pl.Processors, func(p string) bool {
			return strings.HasPrefix(p, "groupbyattrs") && slices.Contains(c.Processors[p].Keys, serviceLabel)
		}) {
			t.Errorf("%s: pipeline %s does not group by %q: the label the driver sends would not become Loki's stream label", collectorConfigPath, name, serviceLabel)
		}
		return
	}
	t.Errorf("%s: no logs pipeline receives the fluentd driver's records (fluentforward)", collectorConfigPath)
}

func isFluentForward(r string) bool { return strings.HasPrefix(r, "fluentforward") }
