package process

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/gateway"
	"github.com/chatrelay/chat/internal/grouplag"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/ops"
	"github.com/chatrelay/chat/internal/relay"
	"github.com/chatrelay/chat/internal/telemetry"
)

// Service names: each binary's name, the "service" label of its metrics and
// the service field of its log lines.
const (
	Gateway    = "websocket-server"
	AIConsumer = "ai-consumer"
	Relay      = "message-relay"
)

// All is every service, for the processes that run the whole system (the
// dev stack, the end-to-end tests).
func All() []string { return []string{Gateway, AIConsumer, Relay} }

// Options says which services one process runs and where their settings
// come from.
type Options struct {
	// Name names the process in its own logs and traces; default: its
	// first service.
	Name string
	// Env is the environment every configuration is read from; nil: the
	// process's. A map, not os.Setenv, so that the dev stack's and a test's
	// settings reach exactly the services they build.
	Env map[string]string
	// Services to run: Gateway, AIConsumer and/or Relay, each once.
	Services []string
	// Gateways is how many websocket-servers to run when Services holds
	// Gateway (0 means 1); the e2e tests run several on one broker. With
	// more than one, the i-th (from 1) is instance <INSTANCE_ID>-<i>, and
	// only the first registers its metrics in the Telemetry's registry:
	// the others' series would collide with its series there.
	Gateways int
	// Model makes the ai-consumer's model from its configuration; nil:
	// aiconsumer.NewModel. Tests inject clients aimed at fakes.
	Model func(aiconsumer.Config) llm.Model
	// Telemetry is the process's telemetry; nil: NewTelemetry with Name and
	// LOG_LEVEL. Tests pass their own, since NewTelemetry replaces the
	// global tracer and logger, which a test binary's stacks share.
	Telemetry *Telemetry
}

// Services is the services of one process, built (clients connected,
// listeners bound) and not yet running. The configurations are what each
// service was built with, for callers that show or extend them.
type Services struct {
	Telemetry *Telemetry
	Ops       config.Ops

	Gateways       []*gateway.Gateway
	GatewayConfigs []gateway.Config
	AI             *aiconsumer.Service // nil unless AIConsumer runs
	AIConfig       aiconsumer.Config
	Relay          *relay.Relay // nil unless Relay runs
	RelayConfig    relay.Config
	GroupLagConfig grouplag.Config

	built  []Service
	checks map[string]ops.Check
	loaded []string // the services whose configurations load read
}

// Build loads every configuration first, so a bad value stops the process
// before anything connects, with an error naming the variable; then it sets
// up telemetry and builds the services in the order given.
func Build(ctx context.Context, o Options) (*Services, error) {
	if o.Env == nil {
		o.Env = Environ()
	}
	if o.Name == "" && len(o.Services) > 0 {
		o.Name = o.Services[0]
	}
	s := &Services{checks: map[string]ops.Check{}}
	if err := s.load(o); err != nil {
		return nil, err
	}
	s.Telemetry = o.Telemetry
	if s.Telemetry == nil {
		tel, err := NewTelemetry(ctx, o.Name, s.Ops.LogLevel)
		if err != nil {
			return nil, err
		}
		s.Telemetry = tel
	}
	for _, name := range o.Services {
		if err := s.build(ctx, name, o); err != nil {
			s.release(ctx)
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := s.buildGroupLag(); err != nil {
		s.release(ctx)
		return nil, err
	}
	return s, nil
}

// buildGroupLag adds the consumer groups' lag exporter, once per process
// whatever services it runs: every process measures every group from the
// broker's view, so the lag stays measured while any process of the system
// is alive, the dead consumer's included (internal/grouplag).
func (s *Services) buildGroupLag() error {
	if !s.GroupLagConfig.Enabled() {
		return nil
	}
	e, err := grouplag.New(s.GroupLagConfig, s.Telemetry.Log.With("component", "grouplag"), s.Telemetry.Registry)
	if err != nil {
		return err
	}
	s.add(withoutChecks{e}, false, "")
	return nil
}

// withoutChecks is a part that readiness does not wait for: a gateway must
// not be taken out of nginx because the lag cannot be measured.
type withoutChecks struct{ Part }

func (withoutChecks) Checks() map[string]ops.Check { return nil }

// load reads the ops settings and each requested service's configuration.
func (s *Services) load(o Options) error {
	s.loaded = o.Services
	if err := config.LoadFrom(&s.Ops, o.Env); err != nil {
		return err
	}
	if err := config.LoadFrom(&s.GroupLagConfig, o.Env); err != nil {
		return err
	}
	for i, name := range o.Services {
		if slices.Index(o.Services, name) != i {
			return fmt.Errorf("process: service %q listed twice", name)
		}
		var err error
		switch name {
		case Gateway:
			err = s.loadGateways(o.Env, max(o.Gateways, 1))
		case AIConsumer:
			err = config.LoadFrom(&s.AIConfig, o.Env)
		case Relay:
			err = config.LoadFrom(&s.RelayConfig, o.Env)
		default:
			err = fmt.Errorf("process: unknown service %q (want %s)", name, strings.Join(All(), ", "))
		}
		if err != nil {
			return err
		}
	}
	return s.GroupLagConfig.Covers(s.consumedGroups(o.Services)...)
}

// consumedGroups is the groups and topics this process's consumers use.
func (s *Services) consumedGroups(services []string) []grouplag.Target {
	var used []grouplag.Target
	if slices.Contains(services, AIConsumer) {
		used = append(used, grouplag.Target{Group: s.AIConfig.Group, Topic: kafka.TopicIncoming})
	}
	if slices.Contains(services, Relay) {
		used = append(used, grouplag.Target{Group: s.RelayConfig.Group, Topic: kafka.TopicResponses})
	}
	return used
}

func (s *Services) loadGateways(env map[string]string, n int) error {
	base := env["INSTANCE_ID"]
	if base == "" {
		base, _ = os.Hostname() // what gateway.Config falls back to
	}
	for i := 1; i <= n; i++ {
		genv := env
		if n > 1 {
			genv = With(env, "INSTANCE_ID", fmt.Sprintf("%s-%d", base, i))
		}
		var cfg gateway.Config
		if err := config.LoadFrom(&cfg, genv); err != nil {
			return err
		}
		s.GatewayConfigs = append(s.GatewayConfigs, cfg)
	}
	return nil
}

// build makes one service with its public constructor, logging the
// configuration it gets with secrets masked.
func (s *Services) build(ctx context.Context, name string, o Options) error {
	log := s.Telemetry.Logger(name)
	reg := telemetry.ServiceRegisterer(s.Telemetry.Registry, name)
	switch name {
	case Gateway:
		return s.buildGateways(ctx, log, reg)
	case AIConsumer:
		newModel := aiconsumer.NewModel
		if o.Model != nil {
			newModel = o.Model
		}
		log.Info("starting", config.LogValue(&s.AIConfig)...)
		ai, err := aiconsumer.New(ctx, s.AIConfig, newModel(s.AIConfig), log, reg)
		if err != nil {
			return err
		}
		s.AI = ai
		s.add(ai, false, "")
	case Relay:
		log.Info("starting", config.LogValue(&s.RelayConfig)...)
		rl, err := relay.New(ctx, s.RelayConfig, log, reg)
		if err != nil {
			return err
		}
		s.Relay = rl
		s.add(rl, false, "")
	}
	return nil
}

func (s *Services) buildGateways(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) error {
	for i, cfg := range s.GatewayConfigs {
		if i > 0 {
			reg = telemetry.ServiceRegisterer(prometheus.NewRegistry(), Gateway)
		}
		log.Info("starting", config.LogValue(&cfg)...)
		gw, err := gateway.New(ctx, cfg, log, reg)
		if err != nil {
			return err
		}
		s.Gateways = append(s.Gateways, gw)
		s.add(gw, len(s.GatewayConfigs) > 1, cfg.Instance())
	}
	return nil
}

// add keeps a built service and its readiness checks; with several
// instances of one service, each check name is prefixed with the instance
// so that none replaces another's.
func (s *Services) add(svc Service, several bool, instance string) {
	s.built = append(s.built, svc)
	for name, c := range svc.Checks() {
		if several {
			name = instance + "/" + name
		}
		s.checks[name] = c
	}
}

// Run serves the ops listener with every service's readiness checks and
// runs the services until ctx ends or one fails, then shuts them down
// within SHUTDOWN_TIMEOUT.
func (s *Services) Run(ctx context.Context) error {
	opsSrv := &ops.Server{Addr: s.Ops.Addr, Gatherer: s.Telemetry.Registry, Log: s.Telemetry.Log}
	for name, c := range s.checks {
		opsSrv.AddCheck(name, c)
	}
	return Run(ctx, s.Telemetry, opsSrv, s.Ops.ShutdownTimeout, partsOf(s.built)...)
}

// release stops what a failed Build had already built, so its connections
// and listeners do not outlive the error (a test builds many stacks in one
// binary): each service's Run with an ended context is its orderly close.
func (s *Services) release(ctx context.Context) {
	done, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cancel()
	_ = runParts(done, s.Telemetry.Log, s.Ops.ShutdownTimeout, partsOf(s.built))
}

func partsOf(svcs []Service) []Part {
	parts := make([]Part, len(svcs))
	for i, svc := range svcs {
		parts[i] = svc
	}
	return parts
}
