// Package chartcheck holds the checks of the Helm chart in deploy/helm/chat,
// run without a cluster: `helm lint` and `helm template` (Helm from
// tools/helm, built by `make tools`) over the value sets in the chart's ci/
// directory; every rendered object decoded strictly into its k8s.io/api type
// (or, for the ServiceMonitor, PrometheusRule and ScaledObject, a small
// struct of the fields the chart uses); and the references between them —
// selectors and pod labels, probes and container ports, the environment and
// the services' configuration structs (process.Configure), grace periods
// and SHUTDOWN_TIMEOUT, the consumers' scalers and their Kafka groups and
// partitions, the PrometheusRule and alerts/, the dashboards and
// dashboards/, nginx's config and nginx/nginx.conf. It also holds the CPU per
// message that docs/scaling.md sizes the chart's values from to what
// docs/performance.md measured.
//
// The checks are tests only. A missing helm skips them locally and fails
// them under CI=true (testinfra.ToolBinary).
package chartcheck
