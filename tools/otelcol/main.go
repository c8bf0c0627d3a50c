// Command otelcol is the OpenTelemetry Collector the tests run: the
// components observability/otel-collector/config.yml uses, at the version of
// the contrib image docker-compose.observability.yml ships, plus the file
// exporter the tests write logs to. internal/obscheck checks that this list
// and the config's match and that the versions equal the image tag.
//
// A hand-written main rather than an OCB manifest: it builds with a plain
// `go build` from this module (go.mod pins every component), so the test
// tools need nothing but the Go toolchain.
package main

import (
	"os"
	"runtime/debug"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/otelcol"
)

// collectorModule names the module whose version is the collector's version.
const collectorModule = "go.opentelemetry.io/collector/otelcol"

func main() {
	info := component.BuildInfo{
		Command:     "otelcol",
		Description: "OpenTelemetry Collector for the chat tests",
		Version:     moduleVersion(collectorModule),
	}
	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				// As the contrib image: ${VAR} means ${env:VAR}; --set needs yaml.
				DefaultScheme: "env",
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(), fileprovider.NewFactory(), yamlprovider.NewFactory(),
				},
			},
		},
	}
	// The command prints its own errors.
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}

// moduleVersion reads a dependency's version from the binary's build
// information, so go.mod stays the one place that names it.
func moduleVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, m := range bi.Deps {
		if m.Path == path {
			return m.Version[1:] // the image tags have no "v"
		}
	}
	return "unknown"
}
