package deploycheck

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/testinfra"
)

// The networks exempt from per-address limits are one setting with two
// readers: the gateways' LIMIT_EXEMPT_NETWORKS and nginx's
// `geo $limit_exempt` block. If they differ, a client one layer lets through
// unlimited is refused by the other (200 users from one exempt host got 429
// from the gateways after 120 connects), or a client nginx limits is not
// limited by the gateways when it reaches them another way.

const exemptVar = "LIMIT_EXEMPT_NETWORKS"

var geoExemptBlock = regexp.MustCompile(`(?s)\bgeo\s+\$limit_exempt\s*\{(.*?)\}`)

// nginxExemptNetworks returns the networks the geo $limit_exempt block maps
// to 1. Only `default 0;` and `<network> 1;` lines are understood; anything
// else is an error rather than a guess.
func nginxExemptNetworks(conf []byte) ([]netip.Prefix, error) {
	blocks := geoExemptBlock.FindAllSubmatch(conf, -1)
	if len(blocks) != 1 {
		return nil, fmt.Errorf("want one `geo $limit_exempt { ... }` block, found %d", len(blocks))
	}
	var out []netip.Prefix
	for _, line := range strings.Split(string(blocks[0][1]), "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), ";"))
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case len(f) == 2 && f[0] == "default" && f[1] == "0":
		case len(f) == 2 && f[1] == "1":
			p, err := ratelimit.ParseNetworks(f[0])
			if err != nil || len(p) != 1 {
				return nil, fmt.Errorf("geo $limit_exempt entry %q: %w", line, err)
			}
			out = append(out, p[0])
		default:
			return nil, fmt.Errorf("geo $limit_exempt: cannot read %q (want `default 0;` or `<network> 1;`)", line)
		}
	}
	return out, nil
}

// defaultExemptNetworks is the setting's default, read as a gateway reads it.
func defaultExemptNetworks(t *testing.T) []netip.Prefix {
	t.Helper()
	var c ratelimit.Config
	if err := config.LoadFrom(&c, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	p, err := ratelimit.ParseNetworks(c.ExemptNetworks)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sameNetworks compares two lists as sets.
func sameNetworks(a, b []netip.Prefix) bool {
	key := func(ps []netip.Prefix) []string {
		var s []string
		for _, p := range ps {
			s = append(s, p.String())
		}
		slices.Sort(s)
		return slices.Compact(s)
	}
	return slices.Equal(key(a), key(b))
}

// nginx.conf is used outside compose too, in front of gateways that run
// with their defaults.
func TestNginxExemptsTheDefaultNetworks(t *testing.T) {
	conf, err := os.ReadFile(filepath.Join(repoRoot(t), testinfra.NginxConfRelPath))
	if err != nil {
		t.Fatal(err)
	}
	geo, err := nginxExemptNetworks(conf)
	if err != nil {
		t.Fatalf("%s: %v", testinfra.NginxConfRelPath, err)
	}
	if def := defaultExemptNetworks(t); !sameNetworks(geo, def) {
		t.Fatalf("%s exempts %v from per-address limits, the default of %s is %v: change both together",
			testinfra.NginxConfRelPath, geo, exemptVar, def)
	}
}

// checkExemptNetworks: each gateway of a compose file set exempts exactly
// what its nginx exempts.
func checkExemptNetworks(t *testing.T, _ string, p *types.Project) {
	_, confPath, conf := nginxService(t, p)
	geo, err := nginxExemptNetworks(conf)
	if err != nil {
		t.Fatalf("%s: %v", confPath, err)
	}
	for _, g := range gatewayServices(p) {
		have, from := defaultExemptNetworks(t), "the default "+exemptVar
		if v := g.Environment[exemptVar]; v != nil && *v != "" {
			if have, err = ratelimit.ParseNetworks(*v); err != nil {
				t.Errorf("%s: %v", g.Name, err)
				continue
			}
			from = exemptVar + "=" + *v
		}
		if !sameNetworks(have, geo) {
			t.Errorf("%s exempts %v (%s), nginx's geo $limit_exempt exempts %v: set both to the same networks", g.Name, have, from, geo)
		}
	}
}

func TestNginxExemptNetworksParser(t *testing.T) {
	good := []byte("geo $limit_exempt {\n  default 0; # none\n  127.0.0.1/32 1;\n  ::1 1;\n  10.0.0.0/8 1;\n}\n")
	got, err := nginxExemptNetworks(good)
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.0.0.0/8")}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %v %v, want %v", got, err, want)
	}
	for _, bad := range []string{
		"geo $limit_exempt {\n default 0;\n 10.0.0.0/8 0;\n}",
		"geo $limit_exempt {\n ranges;\n}",
		"geo $limit_exempt {\n include exempt.conf;\n}",
		"geo $limit_exempt {\n 10.1.2.3/8 1;\n}",
		"geo $other {\n 10.0.0.0/8 1;\n}",
	} {
		if _, err := nginxExemptNetworks([]byte(bad)); err == nil {
			t.Errorf("want an error for %q", bad)
		}
	}
}
