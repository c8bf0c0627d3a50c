// Package auth checks the JWTs that open a chat connection and mints them
// for local use.
//
// A Verifier accepts exactly one algorithm (HS256 by default, or RS256 or
// ES256 with public keys from a PEM or JWKS file), requires exp, checks
// nbf/iat with a leeway, iss and aud when configured, and requires sub to
// equal the connection's userid. Several keys may be active at once, picked
// by the token's kid, so keys can be rotated without refusing live clients.
// Every refusal is an *Error with a bounded Reason for logs and metrics.
//
// A token is checked when a connection opens, but the connection outlives
// that moment. Check returns a small Grant (the token's exp and the id of
// the key that verified it) that the connection keeps instead of the token;
// Valid says whether the grant still holds (Deadline: exp plus AUTH_LEEWAY,
// as Verify counts it; Revoked: its key left the key set).
//
// Keys from AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_FILE are re-read every
// AUTH_KEYS_RELOAD_INTERVAL by Run, and on demand by Reload; the new set
// replaces the old one whole, a file that does not load leaves the old keys
// in use, and OnChange callbacks learn of every change so that connections
// opened with a removed key can be closed. Secrets from AUTH_SECRET are read
// once: removing one takes a restart (which closes that instance's
// connections anyway; clients reconnect with a token of a remaining key).
package auth

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatrelay/chat/internal/ids"
)

// Reasons a token is refused; bounded, for logs and metrics. The client only
// ever sees a bare 401.
const (
	ReasonMissing    = "missing"
	ReasonMalformed  = "malformed"
	ReasonSignature  = "signature"
	ReasonExpired    = "expired"
	ReasonNoExpiry   = "no_expiry"
	ReasonSubject    = "subject"
	ReasonAlgorithm  = "algorithm"
	ReasonNotYet     = "not_yet_valid"
	ReasonUserID     = "bad_userid"
	ReasonIssuer     = "issuer"
	ReasonAudience   = "audience"
	ReasonUnknownKey = "unknown_key"
	ReasonOther      = "invalid"
)

// Reasons lists every Reason, e.g. to start a refusals counter at zero for
// each label value.
func Reasons() []string {
	return []string{
		ReasonMissing, ReasonMalformed, ReasonSignature, ReasonExpired, ReasonNoExpiry,
		ReasonSubject, ReasonAlgorithm, ReasonNotYet, ReasonUserID, ReasonIssuer,
		ReasonAudience, ReasonUnknownKey, ReasonOther,
	}
}

// MaxTokenBytes bounds the token a Verifier looks at; longer is malformed.
// nginx's large_client_header_buffers must leave room for it in the query
// string.
const MaxTokenBytes = 8192

// Error is a refused token with its reason.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "token refused (" + e.Reason + "): " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Verifier checks tokens of one algorithm against a set of keys. The set
// is swapped whole (Reload), so a check never sees half of an old set and
// half of a new one.
type Verifier struct {
	method   jwt.SigningMethod
	keys     atomic.Pointer[keySet]
	issuer   string
	audience []string
	leeway   time.Duration
	parser   *jwt.Parser
	now      func() time.Time
	reloader
}

// NewVerifier accepts only HS256 tokens signed with secret, with exp
// required and a small clock skew allowed. It is NewVerifierFromConfig with
// a single secret and no issuer or audience.
func NewVerifier(secret []byte, leeway time.Duration) (*Verifier, error) {
	if len(secret) < MinSecretBytes {
		return nil, errors.New("AUTH_SECRET: must be at least 16 bytes")
	}
	set, err := newKeySet(nil, secret)
	if err != nil {
		return nil, err
	}
	return newVerifier(jwt.SigningMethodHS256, set, "", nil, leeway), nil
}

func newVerifier(m jwt.SigningMethod, keys *keySet, iss string, aud []string, leeway time.Duration) *Verifier {
	v := &Verifier{
		method: m, issuer: iss, audience: aud, leeway: leeway,
		// Claims are checked in Check, in a fixed order, so that each
		// refusal has one reason; the parser only checks the signature.
		// The algorithm is checked in the key function rather than with
		// WithValidMethods so that a wrong algorithm gets its own reason.
		parser: jwt.NewParser(jwt.WithoutClaimsValidation()),
		now:    time.Now,
	}
	v.keys.Store(keys)
	return v
}

// Algorithm is the only algorithm the verifier accepts ("HS256", …).
func (v *Verifier) Algorithm() string { return v.method.Alg() }

// Verify checks that token is valid and was issued to userID. A refusal is
// always an *Error. It is Check for a caller that keeps nothing.
func (v *Verifier) Verify(token, userID string) error {
	_, err := v.Check(token, userID)
	return err
}

// Check is Verify that also returns what an open connection must remember
// to re-check its token later without keeping it: when it expires and which
// key signed it (see Grant, Valid, Revoked).
func (v *Verifier) Check(token, userID string) (Grant, error) {
	if token == "" {
		return Grant{}, &Error{ReasonMissing, errors.New("no token")}
	}
	if !ValidUserID(userID) {
		return Grant{}, &Error{ReasonUserID, errors.New("userid must be 1-64 characters of [A-Za-z0-9._:-]")}
	}
	if len(token) > MaxTokenBytes {
		return Grant{}, &Error{ReasonMalformed, fmt.Errorf("token longer than %d bytes", MaxTokenBytes)}
	}
	// One snapshot of the key set for the whole check: the key the
	// signature was verified with is the one the grant names, even if a
	// reload swaps the set meanwhile.
	set := v.keys.Load()
	var used *key
	var claims tokenClaims
	_, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		k, err := v.pick(set, t)
		if err != nil {
			return nil, err
		}
		used = k
		return k.material, nil
	})
	if err != nil {
		return Grant{}, &Error{reason(err), err}
	}
	if err := v.checkClaims(&claims, userID); err != nil {
		return Grant{}, err
	}
	return Grant{Expires: unixTime(claims.Exp.sec), KeyID: used.id, fp: used.fp}, nil
}

// tokenClaims are the registered claims with exp, nbf and iat kept as float
// seconds: jwt.NumericDate converts absurd values (nbf: 1e20) to a time that
// overflowed into the past, which would make such a token valid at once.
// Comparing floats cannot overflow.
type tokenClaims struct {
	jwt.RegisteredClaims
	Exp numericDate `json:"exp"`
	Nbf numericDate `json:"nbf"`
	Iat numericDate `json:"iat"`
}

// numericDate is a JWT NumericDate in seconds; null or absent is unset.
type numericDate struct {
	set bool
	sec float64
}

func (d *numericDate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*d = numericDate{}
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return errors.New("a date claim must be a finite number")
	}
	*d = numericDate{set: true, sec: f}
	return nil
}

// checkClaims runs after the signature verified, so its reasons describe a
// genuine token that is not (or no longer) good for this connection.
func (v *Verifier) checkClaims(c *tokenClaims, userID string) error {
	now := float64(v.now().UnixNano()) / 1e9
	lee := v.leeway.Seconds()
	switch {
	case !c.Exp.set:
		return &Error{ReasonNoExpiry, errors.New("exp is required")}
	case now >= c.Exp.sec+lee:
		return &Error{ReasonExpired, errors.New("token is expired")}
	case c.Nbf.set && now+lee < c.Nbf.sec:
		return &Error{ReasonNotYet, errors.New("token is not valid yet (nbf)")}
	case c.Iat.set && now+lee < c.Iat.sec:
		return &Error{ReasonNotYet, errors.New("token was issued in the future (iat)")}
	case v.issuer != "" && c.Issuer != v.issuer:
		return &Error{ReasonIssuer, errors.New("iss is not the configured issuer")}
	case len(v.audience) > 0 && !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(v.audience, a) }):
		return &Error{ReasonAudience, errors.New("aud does not name this service")}
	case c.Subject != userID:
		return &Error{ReasonSubject, errors.New("sub does not match userid")}
	}
	return nil
}

var (
	errAlgorithm  = errors.New("algorithm not accepted")
	errUnknownKey = errors.New("no key for this token")
	errCritical   = errors.New("critical header extensions are not supported")
)

// pick chooses the key of set that must have signed t.
func (v *Verifier) pick(set *keySet, t *jwt.Token) (*key, error) {
	// Pointer identity with the one configured method: "none", another
	// HMAC size or an RSA/HMAC confusion can never get a key.
	if t.Method != v.method {
		return nil, errAlgorithm
	}
	// RFC 7515 §4.1.11: extensions listed in crit must be understood; this
	// verifier understands none.
	if _, crit := t.Header["crit"]; crit {
		return nil, errCritical
	}
	kidv, hasKID := t.Header["kid"]
	// Without any kid'ed key (one plain secret, one PEM key) the kid is
	// irrelevant: there is only one key to try.
	if len(set.byKID) == 0 || !hasKID {
		if set.def == nil {
			return nil, errUnknownKey
		}
		return set.def, nil
	}
	kid, ok := kidv.(string)
	if !ok {
		return nil, errUnknownKey
	}
	if k, ok := set.byKID[kid]; ok {
		return k, nil
	}
	return nil, errUnknownKey
}

func reason(err error) string {
	switch {
	case errors.Is(err, errAlgorithm):
		return ReasonAlgorithm
	case errors.Is(err, errUnknownKey):
		return ReasonUnknownKey
	case errors.Is(err, errCritical):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ReasonSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// An alg the library does not know, or none at all.
		return ReasonAlgorithm
	default:
		return ReasonOther
	}
}

// ValidUserID bounds user ids to characters that are safe in Redis keys
// (no hash-tag braces), channel names, logs and URLs.
func ValidUserID(s string) bool { return ids.ValidCorrelationID(s) }
