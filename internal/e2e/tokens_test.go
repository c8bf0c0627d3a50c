package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/testinfra"
)

// Issue 11, defect 5: a token is checked while the socket is open, not only
// at the handshake. A socket closes with 4001 when its token expires, and
// when the key that signed it leaves the key file; the user's other
// sockets stay.
func TestOpenSocketsFollowTheirTokens(t *testing.T) {
	t.Run("expiry", func(t *testing.T) {
		// AUTH_LEEWAY is a documented knob (clock skew allowed on exp); a
		// short one here so the test does not wait the default 30 s.
		s := startStackWith(t, map[string]string{"AUTH_LEEWAY": "1s"}, 1)
		tok, err := auth.Mint([]byte(testSecret), "hana", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c := readyClient(t, s.WSBase+"/ws?userid=hana&token="+url.QueryEscape(tok), "hana")
		start := time.Now()
		expectCloseWithin(t, c, protocol.TokenExpired.Code, 10*time.Second)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("closed %s after the connect; the token's deadline was 3 s", d.Round(time.Millisecond))
		}
	})

	t.Run("key removed from the key file", func(t *testing.T) {
		s := startStack(t)
		old, kept := newECKey(t), newECKey(t)
		jwks := filepath.Join(t.TempDir(), "jwks.json")
		writeJWKS(t, jwks, map[string]*ecdsa.PrivateKey{"old": old, "kept": kept})
		gw := extraGateway(t, s, map[string]string{
			"AUTH_ALGORITHM": auth.AlgES256, "AUTH_SECRET": "", "AUTH_JWKS_FILE": jwks,
			// A documented knob; the default (30s) would make the test wait.
			"AUTH_KEYS_RELOAD_INTERVAL": "1s",
		})
		dial := func(user, kid string, key *ecdsa.PrivateKey) *testinfra.ChatClient {
			tok, err := auth.MintToken(user, auth.MintOptions{Method: jwt.SigningMethodES256, Key: key, KID: kid, TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return readyClient(t, gw+"/ws?userid="+user+"&token="+url.QueryEscape(tok), user)
		}
		revoked, stays := dial("ines", "old", old), dial("ines", "kept", kept)
		writeJWKS(t, jwks, map[string]*ecdsa.PrivateKey{"kept": kept})
		expectCloseWithin(t, revoked, protocol.TokenRevoked.Code, 10*time.Second)
		_ = stays.Send("still open?", "")
		stays.Expect(t, protocol.TypeAck, wait)
	})
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeJWKS replaces path with the public keys by kid, in one step (a
// rename), as an operator should.
func writeJWKS(t *testing.T, path string, keys map[string]*ecdsa.PrivateKey) {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	var list []map[string]string
	for kid, k := range keys {
		b, err := k.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256", "x": enc(b[1:33]), "y": enc(b[33:])})
	}
	b, err := json.Marshal(map[string]any{"keys": list})
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
