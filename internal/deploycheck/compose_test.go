package deploycheck

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/testinfra"
)

const (
	baseComposeFile = "docker-compose.yml"
	// Overlays (e.g. docker-compose.observability.yml) are loaded on top of
	// the base file, each on its own and all together, and must pass the
	// same checks.
	overlayGlob = "docker-compose.*.yml"

	gatewayPrefix      = "websocket-server-"
	gatewayDefaultPort = "8080"
	nginxConfTarget    = "/etc/nginx/nginx.conf"
)

// testEnv is the environment the compose files are interpolated with: only
// what they require, so a developer's shell or .env does not change the
// result.
var testEnv = map[string]string{
	"AUTH_SECRET": "deploycheck-secret",
}

func repoRoot(t *testing.T) string { return testinfra.RepoRoot(t) }

// composeFileSets returns the base file alone, the base file with each
// overlay, and (with two or more overlays) the base file with all of them.
func composeFileSets(t *testing.T, root string) [][]string {
	t.Helper()
	overlays, err := filepath.Glob(filepath.Join(root, overlayGlob))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(overlays)
	base := filepath.Join(root, baseComposeFile)
	sets := [][]string{{base}}
	for _, o := range overlays {
		sets = append(sets, []string{base, o})
	}
	if len(overlays) > 1 {
		sets = append(sets, append([]string{base}, overlays...))
	}
	return sets
}

func envList(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func loadProject(t *testing.T, root string, files []string, env map[string]string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(root),
		cli.WithName("chatrelay"),
		cli.WithEnv(envList(env)),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cli.ProjectFromOptions(ctx, opts)
}

func setName(root string, files []string) string {
	var names []string
	for _, f := range files {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			rel = f
		}
		names = append(names, rel)
	}
	return strings.Join(names, "+")
}

func hasHealthcheck(s types.ServiceConfig) bool {
	h := s.HealthCheck
	return h != nil && !h.Disable && len(h.Test) > 0 && h.Test[0] != "NONE"
}

func sortedServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range p.ServiceNames() {
		out = append(out, p.Services[name])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type projectCheck struct {
	name  string
	check func(t *testing.T, root string, p *types.Project)
}

var projectChecks = []projectCheck{
	{"every service has a healthcheck", checkHealthchecks},
	{"service_healthy dependencies have healthchecks", checkHealthyDependencies},
	{"build contexts and Dockerfiles exist", checkBuilds},
	{"bind-mounted host paths exist", checkBindMounts},
	{"nginx upstreams match the gateway services", checkNginxUpstreams},
	{"gateways and nginx exempt the same networks", checkExemptNetworks},
	{"restart policy", checkRestart},
	{"images are named without a registry host", checkImageNames},
	{"healthcheck runs the service's own binary", checkHealthcheckBinary},
	{"each replica has its own INSTANCE_ID", checkInstanceIDs},
	{"nginx re-resolves the gateway names", checkNginxResolves},
	{"healthchecks use the tools their images ship", checkImageHealthcheckTools},
	{"kafka JVM options reach the broker only", checkKafkaJVMOptions},
	{"every shipped log line carries its service", checkLogsLabelledByService},
	{"alert links are absolute", checkAlertLinkBases},
}

func TestComposeFiles(t *testing.T) {
	root := repoRoot(t)
	for _, files := range composeFileSets(t, root) {
		t.Run(setName(root, files), func(t *testing.T) {
			p, err := loadProject(t, root, files, testEnv)
			if err != nil {
				t.Fatalf("compose files do not load: %v", err)
			}
			if len(p.Services) == 0 {
				t.Fatal("no services")
			}
			for _, c := range projectChecks {
				t.Run(c.name, func(t *testing.T) { c.check(t, root, p) })
			}
		})
	}
}

func checkHealthchecks(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		if !hasHealthcheck(s) {
			t.Errorf("service %q has no healthcheck", s.Name)
		}
	}
}

func checkHealthyDependencies(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("%s depends on unknown service %q", s.Name, dep)
				continue
			}
			if d.Condition == types.ServiceConditionHealthy && !hasHealthcheck(target) {
				t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", s.Name, dep, dep)
			}
		}
	}
}

var argServiceLine = regexp.MustCompile(`(?m)^\s*ARG\s+SERVICE\b`)

func checkBuilds(t *testing.T, root string, p *types.Project) {
	built := 0
	for _, s := range sortedServices(p) {
		b := s.Build
		if b == nil {
			continue
		}
		built++
		ctxDir := b.Context
		if !filepath.IsAbs(ctxDir) {
			ctxDir = filepath.Join(root, ctxDir)
		}
		if fi, err := os.Stat(ctxDir); err != nil || !fi.IsDir() {
			t.Errorf("%s: build context %s is not a directory (%v)", s.Name, b.Context, err)
			continue
		}
		if b.DockerfileInline != "" {
			continue
		}
		df := b.Dockerfile
		if df == "" {
			df = "Dockerfile"
		}
		if !filepath.IsAbs(df) {
			df = filepath.Join(ctxDir, df)
		}
		content, err := os.ReadFile(df)
		if err != nil {
			t.Errorf("%s: Dockerfile: %v", s.Name, err)
			continue
		}
		svc, ok := b.Args["SERVICE"]
		if !ok {
			continue
		}
		if svc == nil || *svc == "" {
			t.Errorf("%s: build arg SERVICE is empty", s.Name)
			continue
		}
		if !argServiceLine.Match(content) {
			t.Errorf("%s: passes build arg SERVICE but %s declares no ARG SERVICE", s.Name, df)
		}
		// Whether services/<SERVICE> exists is not checked here: the services
		// land one by one, and `go build ./services/...` in the image fails
		// loudly anyway; checkHealthcheckBinary ties the name to the binary.
	}
	if built == 0 {
		t.Error("no service is built from the repo")
	}
}

func checkBindMounts(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if !filepath.IsAbs(v.Source) {
				t.Errorf("%s: bind source %q was not resolved to an absolute path", s.Name, v.Source)
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: bind-mounted %s -> %s: %v", s.Name, v.Source, v.Target, err)
			}
		}
	}
}

// gatewayPort is the port a websocket-server service listens on: the port of
// its HTTP_ADDR, or the binary's default.
func gatewayPort(t *testing.T, s types.ServiceConfig) string {
	t.Helper()
	v, ok := s.Environment["HTTP_ADDR"]
	if !ok || v == nil || *v == "" {
		return gatewayDefaultPort
	}
	_, port, err := net.SplitHostPort(*v)
	if err != nil {
		t.Errorf("%s: HTTP_ADDR=%q: %v", s.Name, *v, err)
		return ""
	}
	return port
}

// gatewayServices are the websocket-server-* services, by name.
func gatewayServices(p *types.Project) []types.ServiceConfig {
	var gateways []types.ServiceConfig
	for _, s := range sortedServices(p) {
		if strings.HasPrefix(s.Name, gatewayPrefix) {
			gateways = append(gateways, s)
		}
	}
	return gateways
}

// nginxService is the nginx service and the config file it bind-mounts.
func nginxService(t *testing.T, p *types.Project) (types.ServiceConfig, string, []byte) {
	t.Helper()
	nginx, ok := p.Services["nginx"]
	if !ok {
		t.Fatal("no nginx service")
	}
	confPath := ""
	for _, v := range nginx.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == nginxConfTarget {
			confPath = v.Source
		}
	}
	if confPath == "" {
		t.Fatalf("nginx does not bind-mount its config at %s", nginxConfTarget)
	}
	conf, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	return nginx, confPath, conf
}

func checkNginxUpstreams(t *testing.T, _ string, p *types.Project) {
	gateways := gatewayServices(p)
	if len(gateways) < 2 {
		t.Errorf("want at least two %s* services behind nginx, have %d", gatewayPrefix, len(gateways))
	}
	nginx, confPath, conf := nginxService(t, p)
	ups, err := testinfra.ParseNginxUpstreams(conf)
	if err != nil {
		t.Fatalf("%s: %v", confPath, err)
	}
	have := map[string]bool{}
	for _, u := range ups {
		if have[u.Addr] {
			t.Errorf("nginx upstream %s listed twice", u.Addr)
		}
		have[u.Addr] = true
	}
	want := map[string]bool{}
	for _, g := range gateways {
		addr := net.JoinHostPort(g.Name, gatewayPort(t, g))
		want[addr] = true
		if !have[addr] {
			t.Errorf("service %s (listening on %s) is missing from the nginx upstream", g.Name, addr)
		}
		if d, ok := nginx.DependsOn[g.Name]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("nginx must depend on %s with condition service_healthy (so the first clients find a gateway)", g.Name)
		}
	}
	for addr := range have {
		if !want[addr] {
			t.Errorf("nginx upstream %s matches no %s* service and port", addr, gatewayPrefix)
		}
	}
}

func checkRestart(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want %q", s.Name, s.Restart, types.RestartPolicyUnlessStopped)
		}
	}
}

// checkImageNames keeps image references short ("redis:7.4-alpine"): the
// first path component of a name must not look like a registry host.
func checkImageNames(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		if s.Image == "" {
			continue
		}
		first, _, hasSlash := strings.Cut(s.Image, "/")
		if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
			t.Errorf("%s: image %q names a registry host", s.Name, s.Image)
		}
	}
}

// checkHealthcheckBinary: a service built with SERVICE=x must check itself
// with /usr/local/bin/x healthcheck.
func checkHealthcheckBinary(t *testing.T, _ string, p *types.Project) {
	for _, s := range sortedServices(p) {
		if s.Build == nil || !hasHealthcheck(s) {
			continue
		}
		svc, ok := s.Build.Args["SERVICE"]
		if !ok || svc == nil {
			continue
		}
		want := []string{"CMD", "/usr/local/bin/" + *svc, "healthcheck"}
		if got := []string(s.HealthCheck.Test); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: healthcheck test %q, want %q", s.Name, got, want)
		}
	}
}

func TestComposeRequiresAuthSecret(t *testing.T) {
	root := repoRoot(t)
	_, err := loadProject(t, root, []string{filepath.Join(root, baseComposeFile)}, map[string]string{})
	if err == nil || !strings.Contains(err.Error(), "AUTH_SECRET") {
		t.Fatalf("loading without AUTH_SECRET: err = %v, want one naming AUTH_SECRET", err)
	}
}

func TestComposeDefaults(t *testing.T) {
	root := repoRoot(t)
	p, err := loadProject(t, root, []string{filepath.Join(root, baseComposeFile)}, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	env := func(service, name string) string {
		s, ok := p.Services[service]
		if !ok {
			t.Fatalf("no service %s", service)
		}
		v, ok := s.Environment[name]
		if !ok {
			t.Fatalf("%s: %s not set", service, name)
		}
		if v == nil {
			return ""
		}
		return *v
	}
	tests := []struct {
		service, name, want string
	}{
		// Runs without an API key out of the box.
		{"ai-consumer", "LLM_OFFLINE", "true"},
		{"ai-consumer", "OPENAI_API_KEY", ""},
		{"ai-consumer", "KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"},
		{"message-relay", "KAFKA_BOOTSTRAP_SERVERS", "kafka:9092"},
		{"message-relay", "REDIS_URL", "redis://redis:6379/0"},
		{"websocket-server-1", "AUTH_SECRET", testEnv["AUTH_SECRET"]},
		{"websocket-server-2", "AUTH_SECRET", testEnv["AUTH_SECRET"]},
		{"websocket-server-1", "INSTANCE_ID", "websocket-server-1"},
		{"websocket-server-2", "INSTANCE_ID", "websocket-server-2"},
		{"websocket-server-1", "REDIS_URL", "redis://redis:6379/0"},
		{"kafka", "KAFKA_PROCESS_ROLES", "broker,controller"},
		{"kafka", "KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://kafka:9092"},
		{"kafka", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"},
	}
	for _, tt := range tests {
		if got := env(tt.service, tt.name); got != tt.want {
			t.Errorf("%s: %s = %q, want %q", tt.service, tt.name, got, tt.want)
		}
	}
	// Every service built from the repository runs with the GOMAXPROCS the
	// tests and the performance figures run with (internal/config).
	goServices := 0
	for _, name := range p.ServiceNames() {
		if s := p.Services[name]; s.Build != nil && s.Build.Args["SERVICE"] != nil {
			goServices++
			if got := env(name, "GOMAXPROCS"); got != config.DeployedGOMAXPROCS {
				t.Errorf("%s: GOMAXPROCS = %q, want %q (config.DeployedGOMAXPROCS)", name, got, config.DeployedGOMAXPROCS)
			}
		}
	}
	if goServices < 4 {
		t.Errorf("found %d services built from the repository, want the gateways and both consumers", goServices)
	}
	for _, name := range p.ServiceNames() {
		if _, ok := p.Services[name].Environment["KAFKA_ZOOKEEPER_CONNECT"]; ok {
			t.Errorf("%s sets KAFKA_ZOOKEEPER_CONNECT: Kafka 4 has no ZooKeeper mode", name)
		}
	}
}

// Docker Compose v1 (docker-compose 1.x) is end of life: compose-go, the
// loader of Compose v2, is the only one the files are checked with, so
// v2-only features (depends_on `restart: true`, configs `content`, top-level
// `name`) are allowed. The obsolete top-level `version` only makes v2 warn.
func TestComposeFilesHaveNoVersion(t *testing.T) {
	root := repoRoot(t)
	for _, files := range composeFileSets(t, root) {
		for _, f := range files {
			var top map[string]any
			readYAML(t, f, &top)
			if _, ok := top["version"]; ok {
				t.Errorf("%s: top-level `version` is obsolete in Compose v2 (it warns and ignores it)", f)
			}
		}
	}
}

var (
	dockerfileFrom = regexp.MustCompile(`(?mi)^FROM\s+(?:--\S+\s+)*(\S+)`)
	dockerfileUser = regexp.MustCompile(`(?mi)^USER\s+(\S+)`)
	// One ENV line of its own, as the Dockerfile has it.
	dockerfileGODEBUG = regexp.MustCompile(`(?m)^ENV\s+GODEBUG=(\S+)\s*$`)
)

// TestDockerfile checks what the compose checks cannot see inside the
// Dockerfile: base images named without a registry host, a build of every
// binary under services/, and a final stage that does not run as root.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	froms := dockerfileFrom.FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, found %d FROM lines", len(froms))
	}
	for _, m := range froms {
		first, _, hasSlash := strings.Cut(m[1], "/")
		if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
			t.Errorf("FROM %s names a registry host", m[1])
		}
	}
	if !strings.Contains(df, "./services/...") || !strings.Contains(df, "go build") {
		t.Error("Dockerfile does not build ./services/...")
	}
	final := df[strings.LastIndex(strings.ToUpper(df), "\nFROM "):]
	users := dockerfileUser.FindAllStringSubmatch(final, -1)
	if len(users) == 0 {
		t.Fatal("final stage sets no USER: it would run as root")
	}
	if u := users[len(users)-1][1]; u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
		t.Errorf("final stage runs as %s", u)
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT\s`).MatchString(final) {
		t.Error("final stage has no ENTRYPOINT")
	}
	// The runtime setting the tests run the services with (testinfra) and
	// the performance figures are measured with.
	if m := dockerfileGODEBUG.FindStringSubmatch(final); m == nil || m[1] != config.SysmonGODEBUG {
		t.Errorf("final stage sets GODEBUG %q, want ENV GODEBUG=%s (internal/config/runtime.go)", m, config.SysmonGODEBUG)
	}
}
