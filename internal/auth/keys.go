package auth

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"math/big"
	"slices"
	"time"
)

// PlainSecretKeyID is the KeyID of a Grant for a token verified with the
// AUTH_SECRET entry without a kid. It cannot be a kid (kids have no spaces or
// parentheses), and it is a label rather than anything derived from the
// secret, so it can be logged.
const PlainSecretKeyID = "(plain secret)"

// Grant is what an open connection keeps of the token it was opened with, so
// it can be re-checked without the token (a socket costs a few KiB; a token
// can be 8). Re-check it with Valid, or with Deadline and Revoked.
type Grant struct {
	// Expires is the token's exp. Verify allows AUTH_LEEWAY past it;
	// Deadline says when the grant really ends.
	Expires time.Time
	// KeyID names the key that verified the token: the token's kid, or,
	// for the one key without a kid (or the only key), its RFC 7638
	// thumbprint (PEM and JWKS keys) or PlainSecretKeyID (AUTH_SECRET).
	KeyID string
	// fp fingerprints the key material, so that a kid reused for another
	// key in a later key file revokes grants of the old key. 0: unknown
	// (a Grant built by hand), only KeyID is compared.
	fp uint64
}

// Deadline is the instant from which Verify refuses the grant's token as
// expired: exp plus AUTH_LEEWAY, the same rule as Verify's.
func (v *Verifier) Deadline(g Grant) time.Time { return g.Expires.Add(v.leeway) }

// Revoked reports whether the key that verified the grant's token is no
// longer in the verifier's key set (removed from the key file, or its kid
// now names another key). Keys from AUTH_SECRET never change while the
// process runs, so their grants are never revoked.
func (v *Verifier) Revoked(g Grant) bool {
	k := v.keys.Load().byID(g.KeyID)
	return k == nil || (g.fp != 0 && g.fp != k.fp)
}

// Valid re-checks an open connection's grant now: an *Error with
// ReasonExpired when its deadline has passed, ReasonUnknownKey when its key
// was revoked, nil while the token Check accepted would still be accepted
// on both counts.
func (v *Verifier) Valid(g Grant) error {
	if !v.now().Before(v.Deadline(g)) {
		return &Error{ReasonExpired, errors.New("token is expired")}
	}
	if v.Revoked(g) {
		return &Error{ReasonUnknownKey, errors.New("the token's key was removed")}
	}
	return nil
}

// latestTime bounds the times a Grant holds: an exp of 1e20 is accepted (far
// away), but does not fit a time.Time computed from nanoseconds.
var latestTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// unixTime turns a NumericDate in seconds (fractions allowed) into a time.
func unixTime(sec float64) time.Time {
	if sec >= float64(latestTime.Unix()) {
		return latestTime
	}
	whole, frac := math.Modf(sec)
	return time.Unix(int64(whole), int64(frac*1e9)).UTC()
}

// key is one verification key and the id a Grant names it by.
type key struct {
	material any // []byte (HS256), *rsa.PublicKey or *ecdsa.PublicKey
	id       string
	fp       uint64
}

// keySet is an immutable set of keys; a reload swaps in a new one.
type keySet struct {
	byKID map[string]*key
	// def serves tokens without a kid, and every token when byKID is
	// empty; nil when every key has a kid.
	def *key
}

// fpSeed makes fingerprints process-local: they compare keys within one
// process and say nothing about a secret outside it.
var fpSeed = maphash.MakeSeed()

// newKeySet builds a set from keys by kid and the key without a kid (nil
// for none).
func newKeySet(byKID map[string]any, def any) (*keySet, error) {
	s := &keySet{}
	if len(byKID) > 0 {
		s.byKID = make(map[string]*key, len(byKID))
	}
	for kid, m := range byKID {
		k, err := newKey(m, kid)
		if err != nil {
			return nil, err
		}
		s.byKID[kid] = k
	}
	if def != nil {
		k, err := newKey(def, "")
		if err != nil {
			return nil, err
		}
		s.def = k
	}
	return s, nil
}

// newKey names material by kid, or by its own id when kid is empty.
func newKey(material any, kid string) (*key, error) {
	if secret, ok := material.([]byte); ok {
		if kid == "" {
			kid = PlainSecretKeyID
		}
		return &key{material: material, id: kid, fp: maphash.Bytes(fpSeed, secret)}, nil
	}
	tp, err := thumbprint(material)
	if err != nil {
		return nil, err
	}
	if kid == "" {
		kid = tp
	}
	return &key{material: material, id: kid, fp: maphash.String(fpSeed, tp)}, nil
}

// thumbprint is the RFC 7638 JWK thumbprint (SHA-256) of a public key: the
// id identity providers and JWK tools show for a key.
func thumbprint(pub any) (string, error) {
	enc := base64.RawURLEncoding.EncodeToString
	var canonical string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		canonical = `{"e":"` + enc(e) + `","kty":"RSA","n":"` + enc(k.N.Bytes()) + `"}`
	case *ecdsa.PublicKey:
		b, err := k.Bytes() // 0x04 || x || y, 32 bytes each on P-256
		if err != nil || len(b) != 65 {
			return "", errors.New("EC key is not an uncompressed P-256 point")
		}
		canonical = `{"crv":"P-256","kty":"EC","x":"` + enc(b[1:33]) + `","y":"` + enc(b[33:]) + `"}`
	default:
		return "", fmt.Errorf("no thumbprint for a %T", pub)
	}
	sum := sha256.Sum256([]byte(canonical))
	return enc(sum[:]), nil
}

// byID finds the key a Grant names.
func (s *keySet) byID(id string) *key {
	if s.def != nil && s.def.id == id {
		return s.def
	}
	return s.byKID[id]
}

// ids lists the set's key ids, sorted, for logs.
func (s *keySet) ids() []string {
	out := slices.Sorted(maps.Keys(s.byKID))
	if s.def != nil {
		out = append(out, s.def.id)
	}
	return out
}

// same reports whether two sets hold the same keys under the same ids.
func (s *keySet) same(o *keySet) bool {
	eq := func(a, b *key) bool { return a.id == b.id && a.fp == b.fp }
	if (s.def == nil) != (o.def == nil) || (s.def != nil && !eq(s.def, o.def)) {
		return false
	}
	return maps.EqualFunc(s.byKID, o.byKID, eq)
}
