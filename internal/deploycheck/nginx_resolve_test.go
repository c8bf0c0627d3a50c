package deploycheck

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatrelay/chat/internal/testinfra"
)

// Defect: nginx resolved the gateway names once, at start; after `docker
// compose up -d --build` recreated the gateways with new addresses it kept
// proxying to the dead ones (502) until it was restarted. The upstream
// servers now carry `resolve` with Docker's resolver, which needs nginx
// 1.27.3 or newer in the image.

const (
	nginxResolveSince = "1.27.3"
	dockerDNS         = "127.0.0.11"
)

var nginxResolverDirective = regexp.MustCompile(`(?m)^\s*resolver\s+([^;]*);`)

func checkNginxResolves(t *testing.T, _ string, p *types.Project) {
	nginx, confPath, conf := nginxService(t, p)
	ups, err := testinfra.ParseNginxUpstreams(conf)
	if err != nil {
		t.Fatalf("%s: %v", confPath, err)
	}
	for _, u := range ups {
		if !slices.Contains(strings.Fields(u.Params), "resolve") {
			t.Errorf("%s: upstream server %s has no `resolve`: nginx keeps its start-time address after the container is recreated", confPath, u.Addr)
		}
	}
	checkDockerResolver(t, confPath, conf)
	name, tag, _ := strings.Cut(nginx.Image, ":")
	version, _, _ := strings.Cut(tag, "-")
	switch {
	case name != "nginx":
		t.Errorf("nginx image %q: the version check knows the official nginx image only", nginx.Image)
	case !exactVersion.MatchString(version):
		t.Errorf("nginx image %q floats: pin a release, %s or newer (upstream `resolve`)", nginx.Image, nginxResolveSince)
	case versionLess(t, version, nginxResolveSince):
		t.Errorf("nginx image %q: upstream `resolve` needs nginx %s or newer", nginx.Image, nginxResolveSince)
	}
}

// checkDockerResolver: one resolver, Docker's embedded DNS, with a valid=
// that bounds how long a dead address is kept (Docker answers with a TTL
// of 600 s).
func checkDockerResolver(t *testing.T, confPath string, conf []byte) {
	t.Helper()
	rs := nginxResolverDirective.FindAllSubmatch(conf, -1)
	if len(rs) != 1 {
		t.Errorf("%s: want one `resolver %s valid=…;`, found %d resolver lines", confPath, dockerDNS, len(rs))
		return
	}
	f := strings.Fields(string(rs[0][1]))
	if !slices.Contains(f, dockerDNS) {
		t.Errorf("%s: resolver %q does not ask Docker's DNS at %s", confPath, rs[0][1], dockerDNS)
	}
	if !slices.ContainsFunc(f, func(s string) bool { return strings.HasPrefix(s, "valid=") }) {
		t.Errorf("%s: resolver %q has no valid=: addresses would be kept for Docker's 600 s TTL", confPath, rs[0][1])
	}
}

// The tests run Debian's nginx 1.22, which refuses `resolve` and a resolver
// in an upstream block: the derived config drops both, and refuses a
// `resolve` without a resolver, which nginx 1.22 cannot check.
func TestDerivedNginxConfigDropsResolve(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join(repoRoot(t), testinfra.NginxConfRelPath))
	if err != nil {
		t.Fatal(err)
	}
	got, err := testinfra.DeriveNginxConfig(conf, t.TempDir(), "127.0.0.1:1", []string{"127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	if nginxResolverDirective.Match(got.Conf) || regexp.MustCompile(`(?m)^\s*(resolver_timeout|server\s.*\bresolve\b)`).Match(got.Conf) {
		t.Errorf("derived config still resolves:\n%s", got.Conf)
	}
	noResolver := nginxResolverDirective.ReplaceAll(conf, nil)
	if _, err := testinfra.DeriveNginxConfig(noResolver, t.TempDir(), "127.0.0.1:1", []string{"127.0.0.1:2"}); err == nil {
		t.Error("a config with `resolve` but no resolver was derived without an error")
	}
}
