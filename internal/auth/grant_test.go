package auth

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func mustThumbprint(t *testing.T, pub any) string {
	t.Helper()
	tp, err := thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// The example of RFC 7638 §3.1.
func TestThumbprintRFC7638(t *testing.T) {
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	if got, want := mustThumbprint(t, pub), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint %s, want %s", got, want)
	}
}

// TestGrantContents: Check returns the token's exp and the id of the key
// that verified it, for every kind of key set.
func TestGrantContents(t *testing.T) {
	testKeys(t)
	rsaPEM := writeFile(t, "rsa.pem", pemPublic(t, &rsaKey.PublicKey))
	ecPEM := writeFile(t, "ec.pem", pemPublic(t, &ecKey1.PublicKey))
	rsaJWKS := jwksFile(t, jwkOf(t, "r1", &rsaKey.PublicKey), jwkOf(t, "r2", &rsaKey2.PublicKey))
	noKID := jwkOf(t, "", &ecKey2.PublicKey)
	delete(noKID, "kid")
	ecJWKS := jwksFile(t, jwkOf(t, "e1", &ecKey1.PublicKey), noKID)
	rs, es, hs := jwt.SigningMethodRS256, jwt.SigningMethodES256, jwt.SigningMethodHS256
	tests := []struct {
		name   string
		cfg    Config
		token  string
		wantID string
	}{
		{"HS256 plain", Config{Secret: string(secretPlain)}, tok(t, hs, secretPlain, nil, claims(nil)), PlainSecretKeyID},
		{"HS256 plain, token with a kid", Config{Secret: string(secretPlain)}, tok(t, hs, secretPlain, "x", claims(nil)), PlainSecretKeyID},
		{"HS256 rotation", Config{Secret: "k1:" + string(secretA) + ",k2:" + string(secretB)}, tok(t, hs, secretB, "k2", claims(nil)), "k2"},
		{"HS256 plain next to kids", Config{Secret: "k1:" + string(secretA) + "," + string(secretPlain)}, tok(t, hs, secretPlain, nil, claims(nil)), PlainSecretKeyID},
		{"RS256 PEM", Config{Algorithm: "RS256", PublicKeyFile: rsaPEM}, tok(t, rs, rsaKey, nil, claims(nil)), mustThumbprint(t, &rsaKey.PublicKey)},
		{"RS256 PEM, token with a kid", Config{Algorithm: "RS256", PublicKeyFile: rsaPEM}, tok(t, rs, rsaKey, "idp-1", claims(nil)), mustThumbprint(t, &rsaKey.PublicKey)},
		{"RS256 JWKS", Config{Algorithm: "RS256", JWKSFile: rsaJWKS}, tok(t, rs, rsaKey2, "r2", claims(nil)), "r2"},
		{"ES256 PEM", Config{Algorithm: "ES256", PublicKeyFile: ecPEM}, tok(t, es, ecKey1, nil, claims(nil)), mustThumbprint(t, &ecKey1.PublicKey)},
		{"ES256 JWKS", Config{Algorithm: "ES256", JWKSFile: ecJWKS}, tok(t, es, ecKey1, "e1", claims(nil)), "e1"},
		{"ES256 JWKS key without a kid", Config{Algorithm: "ES256", JWKSFile: ecJWKS}, tok(t, es, ecKey2, nil, claims(nil)), mustThumbprint(t, &ecKey2.PublicKey)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verifierFor(t, tc.cfg)
			g, err := v.Check(tc.token, "u1")
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !g.Expires.Equal(testNow.Add(time.Hour)) || g.KeyID != tc.wantID || g.fp == 0 {
				t.Fatalf("grant %+v, want Expires %v and KeyID %q", g, testNow.Add(time.Hour), tc.wantID)
			}
			if v.Revoked(g) || v.Valid(g) != nil {
				t.Fatalf("a fresh grant is revoked (%v) or invalid (%v)", v.Revoked(g), v.Valid(g))
			}
			if _, err := v.Check(tc.token, "u2"); err == nil {
				t.Fatal("Check accepted another user")
			}
		})
	}
}

// TestGrantDeadlineMatchesVerify: Valid refuses a grant exactly when Verify
// starts refusing its token, AUTH_LEEWAY after exp, fractions included.
func TestGrantDeadlineMatchesVerify(t *testing.T) {
	for _, exp := range []float64{float64(testNow.Add(time.Hour).Unix()), float64(testNow.Unix()) + 0.25} {
		v := verifierFor(t, Config{Secret: string(secretPlain), Leeway: 30 * time.Second})
		token := tok(t, jwt.SigningMethodHS256, secretPlain, nil, claims(map[string]any{"exp": exp}))
		g, err := v.Check(token, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if want := unixTime(exp); !g.Expires.Equal(want) || !v.Deadline(g).Equal(want.Add(30*time.Second)) {
			t.Fatalf("exp %v: Expires %v, Deadline %v", exp, g.Expires, v.Deadline(g))
		}
		for _, at := range []struct {
			now     time.Time
			expired bool
		}{
			{v.Deadline(g).Add(-time.Millisecond), false},
			{v.Deadline(g).Add(time.Millisecond), true},
		} {
			v.now = func() time.Time { return at.now }
			verr, gerr := v.Verify(token, "u1"), v.Valid(g)
			var ve, ge *Error
			if at.expired != (errors.As(verr, &ve) && ve.Reason == ReasonExpired) || at.expired != (errors.As(gerr, &ge) && ge.Reason == ReasonExpired) {
				t.Fatalf("exp %v at %v: Verify says %v, Valid says %v; want expired=%v", exp, at.now, verr, gerr, at.expired)
			}
		}
	}
}

func TestGrantFarFuture(t *testing.T) {
	v := verifierFor(t, Config{Secret: string(secretPlain)})
	g, err := v.Check(tok(t, jwt.SigningMethodHS256, secretPlain, nil, claims(map[string]any{"exp": 1e20})), "u1")
	if err != nil {
		t.Fatal(err)
	}
	if !g.Expires.Equal(latestTime) || v.Valid(g) != nil {
		t.Fatalf("exp 1e20: Expires %v, Valid %v", g.Expires, v.Valid(g))
	}
}
