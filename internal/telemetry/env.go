package telemetry

// EnvVars are the standard OpenTelemetry variables the services are
// configured with, read here (trace.go) and by the OpenTelemetry SDK rather
// than through a configuration struct; README.md's configuration table
// lists them with the rest.
var EnvVars = []string{
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}
