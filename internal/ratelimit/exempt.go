package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
)

// LIMIT_EXEMPT_NETWORKS lists the client networks no per-address limit
// applies to. nginx's `geo $limit_exempt` block in nginx/nginx.conf must
// list the same networks (internal/deploycheck checks it against this
// default and docker-compose.yml): a client one layer lets through unlimited
// must not be refused by the other, and a client one layer limits must not
// be waved through by the other.

// noNetworks is the value that exempts nobody (an empty variable means the
// default, as for every setting).
const noNetworks = "none"

// ParseNetworks parses a LIMIT_EXEMPT_NETWORKS value: comma-separated CIDR
// networks, a bare address standing for itself alone, or "none". Errors
// name the variable.
func ParseNetworks(s string) ([]netip.Prefix, error) {
	return ParseNetworksOf("LIMIT_EXEMPT_NETWORKS", s)
}

// ParseNetworksOf parses a list of networks in the same form for the
// setting named variable (TRUSTED_PROXY_NETWORKS, say).
func ParseNetworksOf(variable, s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == noNetworks {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := parseNetwork(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%s: %w (want comma-separated networks such as 127.0.0.1/32,::1/128, or %q)", variable, err, noNetworks)
		}
		out = append(out, p)
	}
	return out, nil
}

func parseNetwork(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network or an address: %w", s, err)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: a network has no interface zone", s)
		}
		s = netip.PrefixFrom(a, a.BitLen()).String()
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network: %w", s, err)
	}
	// Clients are matched as plain IPv4 (IPBucket unmaps them), so an
	// IPv4-mapped network would silently match nobody.
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4 networks in IPv4 form", s)
	}
	// 10.1.2.3/8 is most likely a typo; say which network it would be
	// rather than guess.
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has bits set after the prefix length; the network is %s", s, p.Masked())
	}
	return p, nil
}

// exemptPrefixes is the parsed ExemptNetworks. A value Validate refuses
// exempts nobody: limits stay on rather than fail open.
func (c Config) exemptPrefixes() []netip.Prefix {
	p, err := ParseNetworks(c.ExemptNetworks)
	if err != nil {
		return nil
	}
	return p
}

// exempt reports whether ip (with or without a port, as IPBucket takes it)
// lies in an exempt network. What does not parse is not exempt.
func (l *IPConnects) exempt(ip string) bool {
	a, ok := clientAddr(ip)
	if !ok {
		return false
	}
	for _, p := range l.exemptNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr parses a client address as IPConnects counts it: with or
// without a port, without zone, IPv4-mapped IPv6 as IPv4.
func clientAddr(ip string) (netip.Addr, bool) {
	ip = strings.TrimSpace(ip)
	a, err := netip.ParseAddr(ip)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(ip)
		if err2 != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return a.WithZone("").Unmap(), true
}
