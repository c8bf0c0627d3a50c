package auth

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatrelay/chat/internal/config"
)

// replaceFile swaps path's content in one rename, as a deployment should,
// so a reload never reads half a file.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// es256 signs a token for u1 with an EC key and a kid (nil for none).
func es256(t *testing.T, k any, kid any) string {
	t.Helper()
	return tok(t, jwt.SigningMethodES256, k, kid, claims(nil))
}

func mustCheck(t *testing.T, v *Verifier, token string) Grant {
	t.Helper()
	g, err := v.Check(token, "u1")
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return g
}

// changes counts OnChange calls.
func changes(v *Verifier) *atomic.Int32 {
	var n atomic.Int32
	v.OnChange(func() { n.Add(1) })
	return &n
}

func TestReloadRevokesRemovedKey(t *testing.T) {
	testKeys(t)
	path := jwksFile(t, jwkOf(t, "k1", &ecKey1.PublicKey), jwkOf(t, "k2", &ecKey2.PublicKey))
	v := verifierFor(t, Config{Algorithm: "ES256", JWKSFile: path})
	n := changes(v)
	g1, g2 := mustCheck(t, v, es256(t, ecKey1, "k1")), mustCheck(t, v, es256(t, ecKey2, "k2"))

	replaceFile(t, path, jwksBytes(t, jwkOf(t, "k2", &ecKey2.PublicKey)))
	if err := v.Reload(); err != nil {
		t.Fatal(err)
	}
	if !v.Revoked(g1) || v.Revoked(g2) || n.Load() != 1 {
		t.Fatalf("after removing k1: Revoked k1 %v, k2 %v; %d change notifications", v.Revoked(g1), v.Revoked(g2), n.Load())
	}
	var ae *Error
	if err := v.Valid(g1); !errors.As(err, &ae) || ae.Reason != ReasonUnknownKey {
		t.Fatalf("Valid of a revoked grant: %v", err)
	}
	if _, err := v.Check(es256(t, ecKey1, "k1"), "u1"); !errors.As(err, &ae) || ae.Reason != ReasonUnknownKey {
		t.Fatalf("a token of the removed key: %v", err)
	}
	if err := v.Reload(); err != nil || n.Load() != 1 {
		t.Fatalf("an unchanged file: %v, %d notifications", err, n.Load())
	}

	// A kid reused for another key: grants of the old key are revoked.
	replaceFile(t, path, jwksBytes(t, jwkOf(t, "k2", &ecKey1.PublicKey)))
	if err := v.Reload(); err != nil {
		t.Fatal(err)
	}
	if !v.Revoked(g2) || n.Load() != 2 {
		t.Fatalf("k2 now names another key: Revoked %v, %d notifications", v.Revoked(g2), n.Load())
	}
	if g := mustCheck(t, v, es256(t, ecKey1, "k2")); v.Revoked(g) || g.KeyID != "k2" {
		t.Fatalf("a grant of the new k2: %+v, revoked %v", g, v.Revoked(g))
	}
}

func TestReloadPEM(t *testing.T) {
	testKeys(t)
	path := writeFile(t, "ec.pem", pemPublic(t, &ecKey1.PublicKey))
	v := verifierFor(t, Config{Algorithm: "ES256", PublicKeyFile: path})
	g := mustCheck(t, v, es256(t, ecKey1, nil))
	replaceFile(t, path, pemPublic(t, &ecKey2.PublicKey))
	if err := v.Reload(); err != nil {
		t.Fatal(err)
	}
	if !v.Revoked(g) {
		t.Fatal("the grant of the replaced key is not revoked")
	}
	if g2 := mustCheck(t, v, es256(t, ecKey2, nil)); v.Revoked(g2) || g2.KeyID == g.KeyID {
		t.Fatalf("grant of the new key %+v (old %+v)", g2, g)
	}
}

func TestReloadBadFileKeepsKeys(t *testing.T) {
	testKeys(t)
	path := jwksFile(t, jwkOf(t, "k1", &ecKey1.PublicKey))
	v := verifierFor(t, Config{Algorithm: "ES256", JWKSFile: path})
	n := changes(v)
	g := mustCheck(t, v, es256(t, ecKey1, "k1"))
	for name, content := range map[string][]byte{
		"not JSON":      []byte(`{"keys": [`),
		"no usable key": jwksBytes(t, jwkOf(t, "r", &rsaKey.PublicKey)),
		"broken key":    jwksBytes(t, map[string]string{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "!", "y": "!"}),
		"missing":       nil,
	} {
		if content == nil {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		} else {
			replaceFile(t, path, content)
		}
		if err := v.Reload(); err == nil || !strings.Contains(err.Error(), "AUTH_JWKS_FILE") {
			t.Fatalf("%s: want an AUTH_JWKS_FILE error, got %v", name, err)
		}
		if v.Revoked(g) || n.Load() != 0 {
			t.Fatalf("%s: the old keys were dropped (revoked %v, %d notifications)", name, v.Revoked(g), n.Load())
		}
		mustCheck(t, v, es256(t, ecKey1, "k1"))
	}
}

func TestReloadEnvironmentSecrets(t *testing.T) {
	v := verifierFor(t, Config{Secret: "k1:" + string(secretA), KeysReloadInterval: time.Second})
	g := mustCheck(t, v, tok(t, jwt.SigningMethodHS256, secretA, "k1", claims(nil)))
	if err := v.Reload(); err != nil || v.Revoked(g) {
		t.Fatalf("Reload %v, Revoked %v", err, v.Revoked(g))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// logRecords is a slog handler that hands each record's message to a test.
type logRecords chan string

func (c logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (c logRecords) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c logRecords) WithGroup(string) slog.Handler            { return c }
func (c logRecords) Handle(_ context.Context, r slog.Record) error {
	select {
	case c <- r.Message:
	default: // nobody waiting: the test is past this point
	}
	return nil
}

func TestRunReloadsPeriodically(t *testing.T) {
	testKeys(t)
	path := jwksFile(t, jwkOf(t, "k1", &ecKey1.PublicKey), jwkOf(t, "k2", &ecKey2.PublicKey))
	v := verifierFor(t, Config{Algorithm: "ES256", JWKSFile: path, KeysReloadInterval: time.Second})
	if v.interval != time.Second {
		t.Fatalf("interval %v", v.interval)
	}
	v.interval = 5 * time.Millisecond // the test need not wait seconds
	logs := make(logRecords, 1)
	v.SetLogger(slog.New(logs))
	changed := make(chan struct{}, 1)
	v.OnChange(func() { changed <- struct{}{} })
	g1 := mustCheck(t, v, es256(t, ecKey1, "k1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()

	replaceFile(t, path, []byte("{"))
	for msg := ""; msg != "auth keys not reloaded; the previous keys stay in use"; {
		select {
		case msg = <-logs:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not report the broken key file")
		}
	}
	replaceFile(t, path, jwksBytes(t, jwkOf(t, "k2", &ecKey2.PublicKey)))
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not pick up the new key file")
	}
	if !v.Revoked(g1) {
		t.Fatal("k1 not revoked after Run reloaded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestConcurrentCheckDuringReload runs checks while the key set is swapped
// back and forth (go test -race): a token of the key that stays is always
// accepted, one of the key that comes and goes is accepted or refused as
// unknown, never anything else.
func TestConcurrentCheckDuringReload(t *testing.T) {
	testKeys(t)
	both := jwksBytes(t, jwkOf(t, "k1", &ecKey1.PublicKey), jwkOf(t, "k2", &ecKey2.PublicKey))
	only2 := jwksBytes(t, jwkOf(t, "k2", &ecKey2.PublicKey))
	path := writeFile(t, "jwks.json", both)
	v := verifierFor(t, Config{Algorithm: "ES256", JWKSFile: path})
	v.OnChange(func() {})
	t1, t2 := es256(t, ecKey1, "k1"), es256(t, ecKey2, "k2")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if g, err := v.Check(t2, "u1"); err != nil || g.KeyID != "k2" {
					errs <- err
					return
				}
				var ae *Error
				if g, err := v.Check(t1, "u1"); err != nil && !(errors.As(err, &ae) && ae.Reason == ReasonUnknownKey) {
					errs <- err
					return
				} else if err == nil {
					_ = v.Revoked(g)
				}
			}
		})
	}
	for i := range 40 {
		replaceFile(t, path, [][]byte{only2, both}[i%2])
		if err := v.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a check during reloads failed: %v", err)
	}
}

func TestKeysReloadIntervalSetting(t *testing.T) {
	testKeys(t)
	jwks := jwksFile(t, jwkOf(t, "k1", &ecKey1.PublicKey))
	env := func(interval string) map[string]string {
		m := map[string]string{"AUTH_ALGORITHM": "ES256", "AUTH_JWKS_FILE": jwks}
		if interval != "" {
			m["AUTH_KEYS_RELOAD_INTERVAL"] = interval
		}
		return m
	}
	var c Config
	if err := config.LoadFrom(&c, env("")); err != nil || c.KeysReloadInterval != 30*time.Second {
		t.Fatalf("default: %v, %v", c.KeysReloadInterval, err)
	}
	for _, ok := range []string{"0", "0s", "1s", "10m", "24h"} {
		if err := config.LoadFrom(&Config{}, env(ok)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"-1s", "500ms", "25h", "soon"} {
		err := config.LoadFrom(&Config{}, env(bad))
		if err == nil || !strings.Contains(err.Error(), "AUTH_KEYS_RELOAD_INTERVAL") {
			t.Errorf("%s: want an error naming AUTH_KEYS_RELOAD_INTERVAL, got %v", bad, err)
		}
	}
}
