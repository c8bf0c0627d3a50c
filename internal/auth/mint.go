package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintOptions shape a token minted by MintToken. Production tokens come from
// the identity provider; minting is for local use, load tests and tests.
type MintOptions struct {
	// Method defaults to HS256. Key is a []byte secret for HS256, an
	// *rsa.PrivateKey for RS256, an *ecdsa.PrivateKey for ES256.
	Method jwt.SigningMethod
	Key    any
	// KID goes into the header when set (picks the verifier's key).
	KID      string
	TTL      time.Duration
	Issuer   string
	Audience []string
	// Now defaults to time.Now(); it sets iat, and exp = Now+TTL.
	Now time.Time
}

// MintToken signs a token for userID.
func MintToken(userID string, o MintOptions) (string, error) {
	if o.Method == nil {
		o.Method = jwt.SigningMethodHS256
	}
	if o.Key == nil {
		return "", errors.New("mint token: no key")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	claims := jwt.RegisteredClaims{
		Subject:   userID,
		Issuer:    o.Issuer,
		IssuedAt:  jwt.NewNumericDate(o.Now),
		ExpiresAt: jwt.NewNumericDate(o.Now.Add(o.TTL)),
	}
	if len(o.Audience) > 0 {
		claims.Audience = o.Audience
	}
	t := jwt.NewWithClaims(o.Method, claims)
	if o.KID != "" {
		t.Header["kid"] = o.KID
	}
	s, err := t.SignedString(o.Key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Mint signs an HS256 token for userID valid for ttl, without a kid.
func Mint(secret []byte, userID string, ttl time.Duration) (string, error) {
	return MintToken(userID, MintOptions{Key: secret, TTL: ttl})
}

// MintWithKID signs an HS256 token for userID with kid in its header, for a
// verifier holding several secrets (AUTH_SECRET=kid:secret,…).
func MintWithKID(secret []byte, kid, userID string, ttl time.Duration) (string, error) {
	return MintToken(userID, MintOptions{Key: secret, KID: kid, TTL: ttl})
}

// MintFromConfig signs an HS256 token with the first AUTH_SECRET entry (and
// its kid), with AUTH_ISSUER and AUTH_AUDIENCE as iss and aud, so that a
// verifier with the same Config accepts it. It is what `make token` needs.
func MintFromConfig(c Config, userID string, ttl time.Duration) (string, error) {
	if c.Algorithm != "" && !strings.EqualFold(strings.TrimSpace(c.Algorithm), AlgHS256) {
		return "", fmt.Errorf("AUTH_ALGORITHM: only HS256 tokens can be minted locally (have %s; the identity provider holds the private key)", c.Algorithm)
	}
	kid, secret, err := c.SigningSecret()
	if err != nil {
		return "", err
	}
	return MintToken(userID, MintOptions{Key: secret, KID: kid, TTL: ttl, Issuer: c.Issuer, Audience: c.Audience})
}
