package obscheck

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

const runbooksFile = "docs/runbooks.md"

// runbookAnchors returns the GitHub-style anchors of the headings of
// docs/runbooks.md.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), runbooksFile))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		a := drop.ReplaceAllString(strings.ToLower(h), "")
		anchors[strings.ReplaceAll(a, " ", "-")] = true
	}
	return anchors
}

// TestAlertRulesAnnotated: every alert has severity page or ticket, a
// summary, a description and a runbook_url pointing at a section of
// docs/runbooks.md; alert names are unique.
func TestAlertRulesAnnotated(t *testing.T) {
	anchors := runbookAnchors(t)
	seen := map[string]bool{}
	alerts := 0
	for _, f := range loadRuleFiles(t) {
		for _, g := range f.groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					if len(r.Labels) > 0 || len(r.Annotations) > 0 {
						t.Errorf("recording rule %s has alert labels/annotations", r.Record)
					}
					continue
				}
				alerts++
				if seen[r.Alert] {
					t.Errorf("alert %s defined twice", r.Alert)
				}
				seen[r.Alert] = true
				if s := r.Labels["severity"]; s != "page" && s != "ticket" {
					t.Errorf("alert %s: severity %q, want page or ticket", r.Alert, s)
				}
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("alert %s: no %s annotation", r.Alert, a)
					}
				}
				// runbook_url is absolute in the alerts Prometheus sends:
				// the operator's base URL, then the path in this repository.
				rb := strings.TrimPrefix(r.Annotations["runbook_url"], "{{ $externalLabels.runbook_base_url }}/")
				file, anchor, ok := strings.Cut(rb, "#")
				if !ok || file != runbooksFile {
					t.Errorf("alert %s: runbook_url %q does not point into %s#<anchor>", r.Alert, rb, runbooksFile)
					continue
				}
				if !anchors[anchor] {
					t.Errorf("alert %s: runbook_url %q: %s has no heading with anchor %q", r.Alert, rb, runbooksFile, anchor)
				}
				if anchor != strings.ToLower(r.Alert) {
					t.Errorf("alert %s: runbook anchor %q, want the alert name in lower case", r.Alert, anchor)
				}
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alerting rules found")
	}
	// The alerts the issue asks for, by what they watch.
	for _, want := range []string{
		"KafkaConsumerLagHigh", "KafkaConsumerLagGrowing", "ErrorBudgetBurnFast", "ErrorBudgetBurnSlow",
		"WebSocketConnectionsDroppedToZero", "WebSocketConnectionsNearCapacity", "LLMFailureRatioHigh",
		"KafkaDeadLetterRecords", "TargetDown",
	} {
		if !seen[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
}

// TestObservabilityDocs: docs/observability.md lists every alert and every
// metric the services export that the dashboards or rules use.
func TestObservabilityDocs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs/observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	files := loadRuleFiles(t)
	for _, f := range files {
		for _, g := range f.groups.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" && !strings.Contains(doc, r.Alert) {
					t.Errorf("docs/observability.md does not list alert %s", r.Alert)
				}
			}
		}
	}
	for _, m := range []string{
		"chat_ws_connections", "chat_ws_connects_total", "chat_ws_disconnects_total", "chat_ws_frames_total",
		"chat_gateway_messages_accepted_total", "chat_gateway_messages_rejected_total", "chat_gateway_produce_seconds",
		"chat_end_to_end_latency_seconds", "chat_gateway_deliveries_dropped_total", "chat_gateway_subscribed_users",
		"chat_llm_requests_total", "chat_llm_request_seconds", "chat_llm_tokens_total", "chat_ai_answers_total",
		"chat_kafka_records_processed_total", "chat_kafka_record_processing_seconds", "chat_kafka_dlq_records_total",
		"chat_kafka_group_lag", "chat_kafka_group_members", "chat_redis_publish_seconds", "chat_redis_publish_errors_total", "chat_build_info",
		"chat_kafka_connects_total", "chat_kafka_read_bytes_total", "chat_kafka_write_bytes_total",
	} {
		if !strings.Contains(doc, "`"+m+"`") {
			t.Errorf("docs/observability.md has no entry for metric %s", m)
		}
	}
}

// TestComposeOverlayWiring loads docker-compose.yml with the observability
// overlay (internal/deploycheck checks healthchecks, bind mounts, images)
// and checks what only this overlay promises: the app services export
// traces to the collector under their service name and ship their logs to
// it, Prometheus runs with the remote-write receiver and exemplar storage,
// and the config files are mounted where the configs expect each other.
func TestComposeOverlayWiring(t *testing.T) {
	root := repoRoot(t)
	p := loadComposeProject(t)
	env := func(s types.ServiceConfig, k string) string {
		if v, ok := s.Environment[k]; ok && v != nil {
			return *v
		}
		return ""
	}
	for name, svc := range map[string]string{
		"websocket-server-1": "websocket-server", "websocket-server-2": "websocket-server",
		"ai-consumer": "ai-consumer", "message-relay": "message-relay",
	} {
		s, ok := p.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if got := env(s, "OTEL_EXPORTER_OTLP_ENDPOINT"); got != "http://otel-collector:4318" {
			t.Errorf("%s: OTEL_EXPORTER_OTLP_ENDPOINT=%q, want the collector's OTLP/HTTP endpoint", name, got)
		}
		if got := env(s, "OTEL_SERVICE_NAME"); got != svc {
			t.Errorf("%s: OTEL_SERVICE_NAME=%q, want %q", name, got, svc)
		}
		if s.Logging == nil || s.Logging.Driver != "fluentd" {
			t.Errorf("%s: logs are not shipped to the collector (logging driver fluentd)", name)
		} else if s.Logging.Options["fluentd-async"] != "true" {
			t.Errorf("%s: fluentd logging must be async, or the container cannot start while the collector is down", name)
		}
		if _, ok := s.DependsOn["otel-collector"]; !ok {
			t.Errorf("%s: does not wait for otel-collector", name)
		}
		if _, ok := s.DependsOn["kafka"]; !ok {
			t.Errorf("%s: the overlay dropped the base file's dependency on kafka", name)
		}
		// The base file's own settings survive the overlay.
		if got := env(s, "KAFKA_BOOTSTRAP_SERVERS"); got != "kafka:9092" {
			t.Errorf("%s: KAFKA_BOOTSTRAP_SERVERS=%q after the overlay", name, got)
		}
	}

	prom, ok := p.Services["prometheus"]
	if !ok {
		t.Fatal("no prometheus service")
	}
	cmd := strings.Join(prom.Command, " ")
	for _, flag := range []string{"--web.enable-remote-write-receiver", "--enable-feature=exemplar-storage", "--config.file=/etc/prometheus/prometheus.yml"} {
		if !strings.Contains(cmd, flag) {
			t.Errorf("prometheus: command lacks %s", flag)
		}
	}
	wantMounts := map[string]map[string]string{
		"prometheus": {
			"/etc/prometheus/prometheus.yml": "observability/prometheus/prometheus.yml",
			"/etc/prometheus/alerts":         "alerts",
		},
		"alertmanager": {"/etc/alertmanager/alertmanager.yml": "observability/alertmanager/alertmanager.yml"},
		"grafana": {
			"/etc/grafana/provisioning/datasources": "observability/grafana/provisioning/datasources",
			"/etc/grafana/provisioning/dashboards":  "observability/grafana/provisioning/dashboards",
			"/etc/grafana/dashboards":               "dashboards",
		},
		"tempo":          {"/etc/tempo/tempo.yml": "observability/tempo/tempo.yml"},
		"loki":           {"/etc/loki/loki.yml": "observability/loki/loki.yml"},
		"otel-collector": {"/etc/otelcol-contrib/config.yml": "observability/otel-collector/config.yml"},
	}
	for svc, mounts := range wantMounts {
		s, ok := p.Services[svc]
		if !ok {
			t.Errorf("no %s service", svc)
			continue
		}
		have := map[string]string{}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				rel, _ := filepath.Rel(root, v.Source)
				have[v.Target] = rel
			}
		}
		var targets []string
		for target := range mounts {
			targets = append(targets, target)
		}
		sort.Strings(targets)
		for _, target := range targets {
			if have[target] != mounts[target] {
				t.Errorf("%s: %s is mounted from %q, want %q", svc, target, have[target], mounts[target])
			}
		}
	}
	// The pager webhook URL reaches Alertmanager as the file its config reads.
	am := p.Services["alertmanager"]
	amConfig, err := os.ReadFile(filepath.Join(root, "observability/alertmanager/alertmanager.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range amURLFile.FindAllStringSubmatch(string(amConfig), -1) {
		found := false
		for _, c := range am.Configs {
			if c.Target == m[2] {
				found = true
				if _, ok := p.Configs[c.Source]; !ok {
					t.Errorf("alertmanager: config %s is not defined", c.Source)
				}
			}
		}
		if !found {
			t.Errorf("alertmanager.yml reads %s, which the overlay does not provide", m[2])
		}
	}
	if c, ok := p.Configs["pager_webhook_url"]; !ok || c.Content == "" {
		t.Error("configs.pager_webhook_url must have content (from PAGER_WEBHOOK_URL, with a default)")
	}
}

// composeProject is the name loadComposeProject gives the project; compose
// names containers <project>-<service>-<n>.
const composeProject = "chatrelay"

// loadComposeProject loads docker-compose.yml with the observability
// overlay as Compose v2 does (interpolated, normalized, paths resolved).
func loadComposeProject(t testing.TB) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml"), filepath.Join(root, "docker-compose.observability.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithName(composeProject),
		cli.WithEnv([]string{"AUTH_SECRET=obscheck-secret"}),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := cli.ProjectFromOptions(ctx, opts)
	if err != nil {
		t.Fatalf("compose files do not load: %v", err)
	}
	return p
}
