package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	v, err := NewVerifier(secret, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good, _ := Mint(secret, "u1", time.Minute)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name   string
		token  string
		userID string
		reason string
	}{
		{"valid", good, "u1", ""},
		{"missing", "", "u1", ReasonMissing},
		{"garbage", "not.a.token", "u1", ReasonMalformed},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-enough-length"), jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Minute).Unix()}), "u1", ReasonSignature},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "exp": now.Add(-time.Minute).Unix()}), "u1", ReasonExpired},
		{"within leeway", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "exp": now.Add(-2 * time.Second).Unix()}), "u1", ""},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1"}), "u1", ReasonNoExpiry},
		{"wrong sub", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u2", "exp": now.Add(time.Minute).Unix()}), "u1", ReasonSubject},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Minute).Unix()}), "u1", ReasonAlgorithm},
		{"HS512 refused", sign(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Minute).Unix()}), "u1", ReasonAlgorithm},
		{"ES256 refused", sign(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Minute).Unix()}), "u1", ReasonAlgorithm},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Minute).Unix()}), "u1", ReasonNotYet},
		{"bad userid", good, "u 1", ReasonUserID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(tc.token, tc.userID)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.Reason != tc.reason {
				t.Fatalf("want reason %s, got %v", tc.reason, err)
			}
		})
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := NewVerifier([]byte("short"), 0); err == nil {
		t.Fatal("a short secret must be refused")
	}
}
