package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatrelay/chat/internal/config"
)

// Keys are generated once: RSA generation is slow under -race.
var (
	keysOnce           sync.Once
	rsaKey, rsaKey2    *rsa.PrivateKey
	rsaSmall           *rsa.PrivateKey
	ecKey1, ecKey2     *ecdsa.PrivateKey
	ecP384             *ecdsa.PrivateKey
	secretA, secretB   = []byte("secret-A-0123456789abcdef"), []byte("secret-B-0123456789abcdef")
	secretPlain        = []byte("plain-secret-0123456789")
	testNow            = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	defaultTestLeeway  = 30 * time.Second
	errNoReasonAllowed = errors.New("")
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		var e error
		rsaKey2, e = rsa.GenerateKey(rand.Reader, 2048)
		must(e)
		rsaSmall, e = rsa.GenerateKey(rand.Reader, 1024)
		must(e)
		ecKey1, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		ecKey2, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		ecP384, e = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(e)
		if err != nil {
			panic(err)
		}
	})
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func jwkOf(t *testing.T, kid string, pub any) map[string]string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:])}
	}
	t.Fatalf("no jwk for %T", pub)
	return nil
}

func jwksFile(t *testing.T, keys ...map[string]string) string {
	t.Helper()
	return writeFile(t, "jwks.json", jwksBytes(t, keys...))
}

func jwksBytes(t *testing.T, keys ...map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tok signs claims with method/key and an optional kid (kid may be any JSON
// value, to test a non-string kid).
func tok(t *testing.T, method jwt.SigningMethod, key any, kid any, claims jwt.MapClaims) string {
	t.Helper()
	tk := jwt.NewWithClaims(method, claims)
	if kid != nil {
		tk.Header["kid"] = kid
	}
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims for u1 valid at testNow, with overrides (nil deletes a claim).
func claims(over map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "u1", "exp": testNow.Add(time.Hour).Unix(), "iat": testNow.Unix()}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func verifierFor(t *testing.T, c Config) *Verifier {
	t.Helper()
	if c.Leeway == 0 {
		c.Leeway = defaultTestLeeway
	}
	v, err := NewVerifierFromConfig(c)
	if err != nil {
		t.Fatalf("NewVerifierFromConfig: %v", err)
	}
	v.now = func() time.Time { return testNow }
	v.SetLogger(slog.New(slog.DiscardHandler))
	return v
}

type verifyCase struct {
	name   string
	token  string
	userID string // "" means u1
	reason string // "" means accepted
}

func runVerifyCases(t *testing.T, v *Verifier, cases []verifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			uid := tc.userID
			if uid == "" {
				uid = "u1"
			}
			err := v.Verify(tc.token, uid)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("want *Error with reason %s, got %v", tc.reason, err)
			}
			if ae.Reason != tc.reason {
				t.Fatalf("reason %q, want %q (%v)", ae.Reason, tc.reason, err)
			}
		})
	}
}

func TestHS256Claims(t *testing.T) {
	v := verifierFor(t, Config{Algorithm: "HS256", Secret: string(secretPlain), Issuer: "https://idp.example", Audience: []string{"chat", "chat-staging"}})
	hs := func(over map[string]any) string {
		base := map[string]any{"iss": "https://idp.example", "aud": "chat"}
		for k, val := range over {
			base[k] = val
		}
		return tok(t, jwt.SigningMethodHS256, secretPlain, nil, claims(base))
	}
	runVerifyCases(t, v, []verifyCase{
		{"valid", hs(nil), "", ""},
		{"aud array with one match", hs(map[string]any{"aud": []string{"other", "chat-staging"}}), "", ""},
		{"kid ignored with a single plain secret", tok(t, jwt.SigningMethodHS256, secretPlain, "any-kid", claims(map[string]any{"iss": "https://idp.example", "aud": "chat"})), "", ""},
		{"missing token", "", "", ReasonMissing},
		{"bad userid", hs(nil), "u 1", ReasonUserID},
		{"garbage", "a.b.c", "", ReasonMalformed},
		{"two segments", "a.b", "", ReasonMalformed},
		{"too long", hs(map[string]any{"pad": strings.Repeat("x", MaxTokenBytes)}), "", ReasonMalformed},
		{"exp of wrong type", hs(map[string]any{"exp": "tomorrow"}), "", ReasonMalformed},
		{"wrong secret", tok(t, jwt.SigningMethodHS256, secretA, nil, claims(map[string]any{"iss": "https://idp.example", "aud": "chat"})), "", ReasonSignature},
		{"no exp", hs(map[string]any{"exp": nil}), "", ReasonNoExpiry},
		{"expired", hs(map[string]any{"exp": testNow.Add(-time.Minute).Unix()}), "", ReasonExpired},
		{"expired within leeway", hs(map[string]any{"exp": testNow.Add(-10 * time.Second).Unix()}), "", ""},
		{"nbf in future", hs(map[string]any{"nbf": testNow.Add(time.Minute).Unix()}), "", ReasonNotYet},
		{"nbf within leeway", hs(map[string]any{"nbf": testNow.Add(10 * time.Second).Unix()}), "", ""},
		{"iat in future", hs(map[string]any{"iat": testNow.Add(time.Minute).Unix()}), "", ReasonNotYet},
		{"nbf overflowing time", hs(map[string]any{"nbf": 1e20}), "", ReasonNotYet},
		{"iat overflowing time", hs(map[string]any{"iat": 9.3e18}), "", ReasonNotYet},
		{"exp far away", hs(map[string]any{"exp": 1e20}), "", ""},
		{"exp overflowing into the past", hs(map[string]any{"exp": -1e20}), "", ReasonExpired},
		{"exp infinite", craftSigned(t, `{"sub":"u1","exp":1e400,"iss":"https://idp.example","aud":"chat"}`), "", ReasonMalformed},
		{"nbf as a string", hs(map[string]any{"nbf": "0"}), "", ReasonMalformed},
		{"exp null", hs(map[string]any{"exp": json.RawMessage("null")}), "", ReasonNoExpiry},
		{"iat within leeway", hs(map[string]any{"iat": testNow.Add(10 * time.Second).Unix()}), "", ""},
		{"no iss", hs(map[string]any{"iss": nil}), "", ReasonIssuer},
		{"wrong iss", hs(map[string]any{"iss": "https://evil.example"}), "", ReasonIssuer},
		{"no aud", hs(map[string]any{"aud": nil}), "", ReasonAudience},
		{"wrong aud", hs(map[string]any{"aud": []string{"billing"}}), "", ReasonAudience},
		{"no sub", hs(map[string]any{"sub": nil}), "", ReasonSubject},
		{"wrong sub", hs(map[string]any{"sub": "u2"}), "", ReasonSubject},
		{"alg none", tok(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, claims(map[string]any{"iss": "https://idp.example", "aud": "chat"})), "", ReasonAlgorithm},
		{"HS384", tok(t, jwt.SigningMethodHS384, secretPlain, nil, claims(map[string]any{"iss": "https://idp.example", "aud": "chat"})), "", ReasonAlgorithm},
		{"HS512", tok(t, jwt.SigningMethodHS512, secretPlain, nil, claims(map[string]any{"iss": "https://idp.example", "aud": "chat"})), "", ReasonAlgorithm},
		{"unknown alg", craft(`{"alg":"XY999","typ":"JWT"}`, `{"sub":"u1","exp":9999999999}`, "sig"), "", ReasonAlgorithm},
		{"crit header", withCrit(t, secretPlain, claims(map[string]any{"iss": "https://idp.example", "aud": "chat"})), "", ReasonMalformed},
		{"no alg", craft(`{"typ":"JWT"}`, `{"sub":"u1","exp":9999999999}`, "sig"), "", ReasonAlgorithm},
	})
}

// withCrit signs an HS256 token whose header lists a critical extension.
func withCrit(t *testing.T, key []byte, c jwt.MapClaims) string {
	t.Helper()
	tk := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tk.Header["crit"] = []string{"b64"}
	tk.Header["b64"] = false
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// craftSigned signs a raw JSON payload with the plain HS256 secret.
func craftSigned(t *testing.T, payload string) string {
	t.Helper()
	e := base64.RawURLEncoding.EncodeToString
	signing := e([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + e([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(signing, secretPlain)
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + e(sig)
}

// craft assembles a token from raw JSON parts and a raw signature.
func craft(header, payload, sig string) string {
	e := base64.RawURLEncoding.EncodeToString
	return e([]byte(header)) + "." + e([]byte(payload)) + "." + e([]byte(sig))
}

func TestHS256Rotation(t *testing.T) {
	t.Run("kid'ed secrets only", func(t *testing.T) {
		v := verifierFor(t, Config{Secret: "k2:" + string(secretB) + ", k1:" + string(secretA)})
		runVerifyCases(t, v, []verifyCase{
			{"old key k1", tok(t, jwt.SigningMethodHS256, secretA, "k1", claims(nil)), "", ""},
			{"new key k2", tok(t, jwt.SigningMethodHS256, secretB, "k2", claims(nil)), "", ""},
			{"k1 claimed, signed with k2's secret", tok(t, jwt.SigningMethodHS256, secretB, "k1", claims(nil)), "", ReasonSignature},
			{"unknown kid", tok(t, jwt.SigningMethodHS256, secretA, "k3", claims(nil)), "", ReasonUnknownKey},
			{"no kid and no plain secret", tok(t, jwt.SigningMethodHS256, secretA, nil, claims(nil)), "", ReasonUnknownKey},
			{"kid not a string", tok(t, jwt.SigningMethodHS256, secretA, 1, claims(nil)), "", ReasonUnknownKey},
			{"empty kid", tok(t, jwt.SigningMethodHS256, secretA, "", claims(nil)), "", ReasonUnknownKey},
		})
	})
	t.Run("plain secret next to kid'ed ones", func(t *testing.T) {
		v := verifierFor(t, Config{Secret: string(secretPlain) + ",k2:" + string(secretB)})
		runVerifyCases(t, v, []verifyCase{
			{"no kid uses the plain secret", tok(t, jwt.SigningMethodHS256, secretPlain, nil, claims(nil)), "", ""},
			{"kid k2", tok(t, jwt.SigningMethodHS256, secretB, "k2", claims(nil)), "", ""},
			{"no kid signed with k2", tok(t, jwt.SigningMethodHS256, secretB, nil, claims(nil)), "", ReasonSignature},
			{"unknown kid does not fall back to the plain secret", tok(t, jwt.SigningMethodHS256, secretPlain, "k9", claims(nil)), "", ReasonUnknownKey},
		})
	})
	t.Run("minted with kid", func(t *testing.T) {
		c := Config{Secret: "k2:" + string(secretB) + ",k1:" + string(secretA), Leeway: time.Second}
		v, err := NewVerifierFromConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		s, err := MintWithKID(secretA, "k1", "alice", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(s, "alice"); err != nil {
			t.Fatalf("MintWithKID token refused: %v", err)
		}
		s, err = MintFromConfig(c, "alice", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(s, "alice"); err != nil {
			t.Fatalf("MintFromConfig token refused: %v", err)
		}
		h, _, _ := strings.Cut(s, ".")
		hb, _ := base64.RawURLEncoding.DecodeString(h)
		if !strings.Contains(string(hb), `"kid":"k2"`) {
			t.Fatalf("MintFromConfig must sign with the first entry (k2); header %s", hb)
		}
	})
}

func TestAsymmetric(t *testing.T) {
	testKeys(t)
	rsaPEM := pemPublic(t, &rsaKey.PublicKey)
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	ecPEM := pemPublic(t, &ecKey1.PublicKey)
	ecPoint, _ := ecKey1.PublicKey.Bytes()

	t.Run("RS256 PEM", func(t *testing.T) {
		v := verifierFor(t, Config{Algorithm: "RS256", PublicKeyFile: writeFile(t, "rsa.pem", rsaPEM)})
		runVerifyCases(t, v, []verifyCase{
			{"valid", tok(t, jwt.SigningMethodRS256, rsaKey, nil, claims(nil)), "", ""},
			{"valid with a kid (single key)", tok(t, jwt.SigningMethodRS256, rsaKey, "idp-1", claims(nil)), "", ""},
			{"other private key", tok(t, jwt.SigningMethodRS256, rsaKey2, nil, claims(nil)), "", ReasonSignature},
			{"HS256 with the PEM as HMAC secret", tok(t, jwt.SigningMethodHS256, rsaPEM, nil, claims(nil)), "", ReasonAlgorithm},
			{"HS256 with the DER as HMAC secret", tok(t, jwt.SigningMethodHS256, rsaDER, nil, claims(nil)), "", ReasonAlgorithm},
			{"RS512", tok(t, jwt.SigningMethodRS512, rsaKey, nil, claims(nil)), "", ReasonAlgorithm},
			{"PS256", tok(t, jwt.SigningMethodPS256, rsaKey, nil, claims(nil)), "", ReasonAlgorithm},
			{"ES256", tok(t, jwt.SigningMethodES256, ecKey1, nil, claims(nil)), "", ReasonAlgorithm},
			{"alg none", tok(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, claims(nil)), "", ReasonAlgorithm},
			{"expired", tok(t, jwt.SigningMethodRS256, rsaKey, nil, claims(map[string]any{"exp": testNow.Add(-time.Hour).Unix()})), "", ReasonExpired},
			{"wrong sub", tok(t, jwt.SigningMethodRS256, rsaKey, nil, claims(map[string]any{"sub": "u2"})), "", ReasonSubject},
		})
	})
	t.Run("RS256 JWKS rotation", func(t *testing.T) {
		v := verifierFor(t, Config{Algorithm: "RS256", JWKSFile: jwksFile(t,
			jwkOf(t, "2026-05", &rsaKey.PublicKey),
			jwkOf(t, "2026-04", &rsaKey2.PublicKey),
			jwkOf(t, "ec-key", &ecKey1.PublicKey),                                                 // other kty: skipped
			map[string]string{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}, // encryption key: skipped
		)})
		runVerifyCases(t, v, []verifyCase{
			{"current key", tok(t, jwt.SigningMethodRS256, rsaKey, "2026-05", claims(nil)), "", ""},
			{"previous key", tok(t, jwt.SigningMethodRS256, rsaKey2, "2026-04", claims(nil)), "", ""},
			{"kid of the other key", tok(t, jwt.SigningMethodRS256, rsaKey, "2026-04", claims(nil)), "", ReasonSignature},
			{"unknown kid", tok(t, jwt.SigningMethodRS256, rsaKey, "2026-06", claims(nil)), "", ReasonUnknownKey},
			{"no kid", tok(t, jwt.SigningMethodRS256, rsaKey, nil, claims(nil)), "", ReasonUnknownKey},
			{"kid of the skipped EC key", tok(t, jwt.SigningMethodRS256, rsaKey, "ec-key", claims(nil)), "", ReasonUnknownKey},
			{"HS256 with the modulus as secret", tok(t, jwt.SigningMethodHS256, rsaKey.N.Bytes(), "2026-05", claims(nil)), "", ReasonAlgorithm},
		})
	})
	t.Run("ES256 PEM", func(t *testing.T) {
		v := verifierFor(t, Config{Algorithm: "es256", PublicKeyFile: writeFile(t, "ec.pem", ecPEM)})
		runVerifyCases(t, v, []verifyCase{
			{"valid", tok(t, jwt.SigningMethodES256, ecKey1, nil, claims(nil)), "", ""},
			{"other private key", tok(t, jwt.SigningMethodES256, ecKey2, nil, claims(nil)), "", ReasonSignature},
			{"HS256 with the PEM as secret", tok(t, jwt.SigningMethodHS256, ecPEM, nil, claims(nil)), "", ReasonAlgorithm},
			{"HS256 with the point as secret", tok(t, jwt.SigningMethodHS256, ecPoint, nil, claims(nil)), "", ReasonAlgorithm},
			{"RS256", tok(t, jwt.SigningMethodRS256, rsaKey, nil, claims(nil)), "", ReasonAlgorithm},
			{"ES384", tok(t, jwt.SigningMethodES384, ecP384, nil, claims(nil)), "", ReasonAlgorithm},
		})
	})
	t.Run("ES256 JWKS rotation", func(t *testing.T) {
		v := verifierFor(t, Config{Algorithm: "ES256", JWKSFile: jwksFile(t, jwkOf(t, "new", &ecKey2.PublicKey), jwkOf(t, "old", &ecKey1.PublicKey), jwkOf(t, "rsa", &rsaKey.PublicKey))})
		runVerifyCases(t, v, []verifyCase{
			{"new", tok(t, jwt.SigningMethodES256, ecKey2, "new", claims(nil)), "", ""},
			{"old", tok(t, jwt.SigningMethodES256, ecKey1, "old", claims(nil)), "", ""},
			{"swapped kid", tok(t, jwt.SigningMethodES256, ecKey1, "new", claims(nil)), "", ReasonSignature},
			{"unknown kid", tok(t, jwt.SigningMethodES256, ecKey1, "older", claims(nil)), "", ReasonUnknownKey},
		})
	})
}

func TestConfigErrors(t *testing.T) {
	testKeys(t)
	rsaPEM := writeFile(t, "rsa.pem", pemPublic(t, &rsaKey.PublicKey))
	ecPEM := writeFile(t, "ec.pem", pemPublic(t, &ecKey1.PublicKey))
	smallPEM := writeFile(t, "small.pem", pemPublic(t, &rsaSmall.PublicKey))
	p384PEM := writeFile(t, "p384.pem", pemPublic(t, &ecP384.PublicKey))
	privDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	privPEM := writeFile(t, "priv.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
	twoPEM := writeFile(t, "two.pem", append(pemPublic(t, &rsaKey.PublicKey), pemPublic(t, &rsaKey2.PublicKey)...))
	const long = "0123456789abcdef0123"
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown algorithm", Config{Algorithm: "HS384", Secret: long}, "AUTH_ALGORITHM"},
		{"none algorithm", Config{Algorithm: "none", Secret: long}, "AUTH_ALGORITHM"},
		{"no secret", Config{Algorithm: "HS256"}, "AUTH_SECRET"},
		{"short secret", Config{Secret: "short-secret"}, "AUTH_SECRET"},
		{"short kid'ed secret", Config{Secret: "k1:short-secret"}, "AUTH_SECRET"},
		{"two plain secrets", Config{Secret: long + "," + long + "x"}, "AUTH_SECRET"},
		{"duplicate kid", Config{Secret: "k1:" + long + ",k1:" + long + "x"}, "AUTH_SECRET"},
		{"bad kid", Config{Secret: "k 1:" + long}, "AUTH_SECRET"},
		{"empty entry", Config{Secret: "k1:" + long + ",,"}, "AUTH_SECRET"},
		{"HS256 with a key file", Config{Secret: long, PublicKeyFile: rsaPEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"negative leeway", Config{Secret: long, Leeway: -time.Second}, "AUTH_LEEWAY"},
		{"RS256 without keys", Config{Algorithm: "RS256"}, "AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_FILE"},
		{"RS256 with both files", Config{Algorithm: "RS256", PublicKeyFile: rsaPEM, JWKSFile: rsaPEM}, "set only one"},
		{"RS256 with a secret", Config{Algorithm: "RS256", Secret: long, PublicKeyFile: rsaPEM}, "AUTH_SECRET"},
		{"missing PEM file", Config{Algorithm: "RS256", PublicKeyFile: filepath.Join(t.TempDir(), "nope.pem")}, "AUTH_PUBLIC_KEY_FILE"},
		{"not PEM", Config{Algorithm: "RS256", PublicKeyFile: writeFile(t, "x.pem", []byte("hello"))}, "AUTH_PUBLIC_KEY_FILE"},
		{"private key PEM", Config{Algorithm: "RS256", PublicKeyFile: privPEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"two PEM blocks", Config{Algorithm: "RS256", PublicKeyFile: twoPEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"EC key for RS256", Config{Algorithm: "RS256", PublicKeyFile: ecPEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"RSA key for ES256", Config{Algorithm: "ES256", PublicKeyFile: rsaPEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"RSA 1024", Config{Algorithm: "RS256", PublicKeyFile: smallPEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"P-384 for ES256", Config{Algorithm: "ES256", PublicKeyFile: p384PEM}, "AUTH_PUBLIC_KEY_FILE"},
		{"JWKS not JSON", Config{Algorithm: "RS256", JWKSFile: writeFile(t, "j.json", []byte("{"))}, "AUTH_JWKS_FILE"},
		{"JWKS without a usable key", Config{Algorithm: "ES256", JWKSFile: jwksFile(t, jwkOf(t, "r", &rsaKey.PublicKey))}, "AUTH_JWKS_FILE"},
		{"JWKS broken key", Config{Algorithm: "RS256", JWKSFile: jwksFile(t, map[string]string{"kty": "RSA", "kid": "x", "n": "!!", "e": "AQAB"})}, "AUTH_JWKS_FILE"},
		{"JWKS small RSA key", Config{Algorithm: "RS256", JWKSFile: jwksFile(t, jwkOf(t, "s", &rsaSmall.PublicKey))}, "AUTH_JWKS_FILE"},
		{"JWKS point off the curve", Config{Algorithm: "ES256", JWKSFile: jwksFile(t, map[string]string{"kty": "EC", "kid": "x", "crv": "P-256",
			"x": base64.RawURLEncoding.EncodeToString(make([]byte, 32)), "y": base64.RawURLEncoding.EncodeToString(append(make([]byte, 31), 1))})}, "AUTH_JWKS_FILE"},
		{"JWKS duplicate kid", Config{Algorithm: "ES256", JWKSFile: jwksFile(t, jwkOf(t, "a", &ecKey1.PublicKey), jwkOf(t, "a", &ecKey2.PublicKey))}, "AUTH_JWKS_FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifierFromConfig(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %q, got %v", tc.want, err)
			}
			if tc.cfg.Secret != "" {
				for _, part := range strings.Split(tc.cfg.Secret, ",") {
					_, s, _ := strings.Cut(part, ":")
					if len(s) >= 8 && strings.Contains(err.Error(), s) {
						t.Fatalf("error quotes a secret: %v", err)
					}
				}
			}
		})
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	testKeys(t)
	jwks := jwksFile(t, jwkOf(t, "k", &rsaKey.PublicKey))
	var c Config
	if err := config.LoadFrom(&c, map[string]string{"AUTH_SECRET": "k1:" + string(secretA)}); err != nil {
		t.Fatal(err)
	}
	if c.Algorithm != "HS256" || c.Leeway != 30*time.Second {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if got := config.Redact(c)["AUTH_SECRET"]; got != "*****" {
		t.Fatalf("AUTH_SECRET not masked: %q", got)
	}
	c = Config{}
	err := config.LoadFrom(&c, map[string]string{"AUTH_ALGORITHM": "RS256", "AUTH_JWKS_FILE": jwks, "AUTH_ISSUER": "iss", "AUTH_AUDIENCE": "a,b", "AUTH_LEEWAY": "5s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Audience) != 2 || c.Leeway != 5*time.Second {
		t.Fatalf("loaded %+v", c)
	}
	v, err := NewVerifierFromConfig(c)
	if err != nil || v.Algorithm() != "RS256" {
		t.Fatalf("verifier %v, %v", v, err)
	}
	if err := config.LoadFrom(&Config{}, map[string]string{"AUTH_ALGORITHM": "RS256"}); err == nil || !strings.Contains(err.Error(), "AUTH_PUBLIC_KEY_FILE") {
		t.Fatalf("Validate not run by config.Load: %v", err)
	}
	if err := config.LoadFrom(&Config{}, map[string]string{"AUTH_SECRET": string(secretA), "AUTH_LEEWAY": "soon"}); err == nil || !strings.Contains(err.Error(), "AUTH_LEEWAY") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestReasonsBounded(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r] || r == "" {
			t.Fatalf("duplicate or empty reason %q", r)
		}
		seen[r] = true
	}
	if len(seen) != 13 {
		t.Fatalf("%d reasons", len(seen))
	}
	_ = errNoReasonAllowed
}

// TestSecretErrorsQuoteNothing: an AUTH_SECRET error names the entry by its
// position, never by anything written in it. What looks like a kid may be
// the start of a secret that contains a colon ("passphrase:2026" is a
// plain secret to its author, and kid "passphrase" with a short secret to
// the parser).
func TestSecretErrorsQuoteNothing(t *testing.T) {
	for _, value := range []string{
		"Zq9xW2vPk7Lm:2026", // a passphrase with a colon: "kid" + short secret
		"Zq9xW2vPk7Lm:Rt5yHn3bQw8eJk2s,Zq9xW2vPk7Lm:Uo1pAz6xCv4nMb7g", // the same prefix twice
		"Rt5yHn3bQw8eJk2s,Zq9x W2vPk7Lm:Uo1pAz6xCv4nMb7g",             // a "kid" with a space
		"Zq9xW2vPk7Lm", // a short plain secret
	} {
		_, err := NewVerifierFromConfig(Config{Secret: value})
		if err == nil || !strings.Contains(err.Error(), "AUTH_SECRET") {
			t.Fatalf("%q: want an AUTH_SECRET error, got %v", value, err)
		}
		for i := 0; i+6 <= len(value); i++ {
			if w := value[i : i+6]; strings.Contains(err.Error(), w) {
				t.Fatalf("%q: the error quotes %q from the value: %v", value, w, err)
			}
		}
	}
}
