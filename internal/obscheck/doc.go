// Package obscheck holds the checks of the observability files at the repo
// root: the Prometheus configuration (observability/prometheus), the alerting
// and recording rules and their unit tests (alerts/), the Alertmanager
// configuration (observability/alertmanager), the Grafana provisioning
// (observability/grafana) and dashboards (dashboards/), the compose overlay
// (docker-compose.observability.yml) and the runbooks (docs/runbooks.md).
//
// The checks are tests only:
//
//   - promtool_test.go runs `promtool check config` on a copy of
//     prometheus.yml laid out as in the container, `promtool check rules`
//     and `promtool test rules alerts/tests/*.yml`, and `amtool
//     check-config` on the Alertmanager configuration.
//   - promql_test.go parses every PromQL expression of the rules and the
//     dashboards and checks that every metric it names is a recording rule
//     or is exported by the running services: it builds and starts
//     services/devstack, sends a little traffic through a WebSocket client
//     and scrapes /metrics.
//   - dashboards_test.go loads every dashboard as a dashboard model
//     (datasources provisioned, targets, the correlation_id variable and the
//     Tempo/Loki links, exemplars on latency panels, unique uids).
//   - rules_test.go checks the rules' labels and annotations (severity,
//     summary, description, a runbook_url whose anchor exists) and the
//     overlay's wiring of the app services.
//   - alert_e2e_test.go fires the real consumer-lag pages end to end: the
//     three services as separate processes, the ai-consumer killed with
//     SIGKILL while messages keep coming, a real prometheus scraping the
//     others every second with test copies of KafkaConsumerLagHigh and
//     KafkaConsumerGroupDown (derived from alerts/alerts.yml: shorter `for`,
//     lower threshold) and the recording rules they read, a real
//     Alertmanager with the real routing, and a webhook receiver in the test.
//   - collector_test.go checks that the collector built for the tests has
//     exactly the components of observability/otel-collector/config.yml and
//     runs `otelcol validate` on it; collector_live_test.go runs it live
//     (only its addresses changed) between the real services and Jaeger
//     (traces) and the file exporter (logs, sent as Docker's fluentd
//     logging driver sends them), and checks the labels and ids the
//     dashboards and Grafana's data sources rely on, crash output included.
//   - toolversions_test.go checks that the tools the tests run are the
//     versions docker-compose.observability.yml ships.
//
// prometheus, promtool, alertmanager, amtool and the collector are built
// at the compose versions from their modules under tools/ by `make tools`
// into the user cache (internal/testinfra/toolcache): a missing one skips
// the test locally and fails it under CI=true (testinfra.ToolBinary).
package obscheck
