package telemetry

import (
	"regexp"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
)

// Namespace prefixes every metric the services define.
const Namespace = "chat"

// Version is the build's version, set with -ldflags "-X …telemetry.Version=…";
// otherwise the module version or "dev".
var Version = ""

// BuildVersion returns Version or what the Go toolchain recorded.
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// schedLatencies is the one runtime/metrics series added to the Go
// collector's defaults: how long a goroutine made ready waits until it runs
// (go_sched_latencies_seconds, eight buckets). The services run with one P
// (config.DeployedGOMAXPROCS), and this is what says that one is too few —
// CPU time says how busy a pod is, not how long its work waits for it.
var schedLatencies = collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$`)}

// NewRegistry returns the process's metric registry with Go runtime
// (schedLatencies included), process and build-info collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(schedLatencies)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "Always 1; labels name the running build.",
		ConstLabels: prometheus.Labels{"version": BuildVersion()},
	})
	bi.Set(1)
	reg.MustRegister(bi)
	return reg
}

// ServiceRegisterer scopes a registerer to one service by a const "service"
// label, so the parts of the all-in-one dev process can share a registry
// with the same metric names as the standalone services.
func ServiceRegisterer(reg prometheus.Registerer, service string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"service": service}, reg)
}

// ObserveWithTrace records v with the span's trace id as an exemplar, so a
// latency panel links to the trace of a slow request (Prometheus stores
// exemplars when scraping OpenMetrics with exemplar storage on).
func ObserveWithTrace(h prometheus.Observer, v float64, span trace.Span) {
	if span != nil {
		if sc := span.SpanContext(); sc.IsSampled() {
			if eo, ok := h.(prometheus.ExemplarObserver); ok {
				eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": sc.TraceID().String()})
				return
			}
		}
	}
	h.Observe(v)
}
