package process

import (
	"maps"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/ops"
)

// Configure reads and checks the configuration of the given services from
// env (nil: the process's environment) as Build does before it connects
// anything, and builds nothing. Deployment checks use it to hold what a
// deployment sets (the Helm chart's environment) to what the services read:
// the configurations come back with their defaults applied, and Settings
// names the variables they read.
func Configure(env map[string]string, services ...string) (*Services, error) {
	if env == nil {
		env = Environ()
	}
	s := &Services{checks: map[string]ops.Check{}}
	if err := s.load(Options{Env: env, Services: services}); err != nil {
		return nil, err
	}
	return s, nil
}

// Settings is every variable the loaded configurations read — the ops
// settings, the group lag exporter's and each loaded service's own — with
// the value it holds as the start-up log line shows it (config.Redact:
// secrets masked). The OpenTelemetry variables are read outside them
// (telemetry.EnvVars).
func (s *Services) Settings() map[string]string {
	cfgs := []any{s.Ops, s.GroupLagConfig}
	for _, name := range s.loaded {
		switch name {
		case Gateway:
			cfgs = append(cfgs, s.GatewayConfigs[0])
		case AIConsumer:
			cfgs = append(cfgs, s.AIConfig)
		case Relay:
			cfgs = append(cfgs, s.RelayConfig)
		}
	}
	settings := map[string]string{}
	for _, c := range cfgs {
		maps.Copy(settings, config.Redact(c))
	}
	return settings
}
