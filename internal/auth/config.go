package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithms a Verifier can be configured for.
const (
	AlgHS256 = "HS256"
	AlgRS256 = "RS256"
	AlgES256 = "ES256"
)

// MinSecretBytes is the shortest HS256 secret accepted.
const MinSecretBytes = 16

// MinRSABits is the smallest RSA modulus accepted for RS256.
const MinRSABits = 2048

// Config is the token verification configuration, loadable with
// internal/config (embed it in a service's Config and call its Validate, or
// let NewVerifierFromConfig report the problem).
//
// AUTH_SECRET holds one secret, or several for rotation as a comma-separated
// list of kid:secret entries, e.g. "2026-05:4f1c…,2026-04:9ab2…". At most
// one entry may lack a kid (a plain secret): it verifies tokens that carry no
// kid. A kid is 1–64 characters of [A-Za-z0-9._-]; a secret is at least 16
// bytes and cannot contain a comma, and a plain secret cannot contain a colon
// (use hex or base64, e.g. `openssl rand -hex 32`). The first entry is the
// one used to mint tokens (MintFromConfig, `make token`).
type Config struct {
	Algorithm string `env:"AUTH_ALGORITHM" envDefault:"HS256"`
	Secret    string `env:"AUTH_SECRET" secret:"true"`
	// PublicKeyFile is a PEM file with one RSA or EC public key (or a
	// certificate) for RS256/ES256; JWKSFile a JWKS JSON file whose keys
	// are picked by kid. Set one of them.
	PublicKeyFile string `env:"AUTH_PUBLIC_KEY_FILE"`
	JWKSFile      string `env:"AUTH_JWKS_FILE"`
	// Issuer, when set, must equal the token's iss.
	Issuer string `env:"AUTH_ISSUER"`
	// Audience, when set (comma-separated), must share a value with aud.
	Audience []string      `env:"AUTH_AUDIENCE" envSeparator:","`
	Leeway   time.Duration `env:"AUTH_LEEWAY" envDefault:"30s"`
	// KeysReloadInterval is how often Verifier.Run re-reads
	// AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_FILE, so a key removed from the
	// file stops being accepted (and its open connections can be closed)
	// without a restart; 0 turns it off. AUTH_SECRET is read once.
	KeysReloadInterval time.Duration `env:"AUTH_KEYS_RELOAD_INTERVAL" envDefault:"30s"`
}

// Bounds of AUTH_KEYS_RELOAD_INTERVAL (besides 0, off): reading a small file
// more often than every second buys nothing, and a day is already slower
// than any key removal should take.
const (
	MinKeysReloadInterval = time.Second
	MaxKeysReloadInterval = 24 * time.Hour
)

// Validate checks the configuration, including that the key files load.
// Errors name the environment variable and never hold a secret.
func (c Config) Validate() error {
	_, err := NewVerifierFromConfig(c)
	return err
}

// NewVerifierFromConfig builds the verifier for c. With RS256/ES256 its key
// file can be re-read (Reload, Run); with HS256 the keys are fixed.
func NewVerifierFromConfig(c Config) (*Verifier, error) {
	if c.Leeway < 0 || c.Leeway > 10*time.Minute {
		return nil, errors.New("AUTH_LEEWAY: must be between 0s and 10m")
	}
	if i := c.KeysReloadInterval; i != 0 && (i < MinKeysReloadInterval || i > MaxKeysReloadInterval) {
		return nil, fmt.Errorf("AUTH_KEYS_RELOAD_INTERVAL: must be 0 (off) or between %s and %s", MinKeysReloadInterval, MaxKeysReloadInterval)
	}
	aud := make([]string, 0, len(c.Audience))
	for _, a := range c.Audience {
		if a = strings.TrimSpace(a); a != "" {
			aud = append(aud, a)
		}
	}
	m, load, fromFile, err := keySource(c)
	if err != nil {
		return nil, err
	}
	set, err := load()
	if err != nil {
		return nil, err
	}
	v := newVerifier(m, set, strings.TrimSpace(c.Issuer), aud, c.Leeway)
	if fromFile {
		v.load, v.interval = load, c.KeysReloadInterval
	}
	return v, nil
}

// keySource checks which keys c configures and returns the signing method
// and the function that reads them, which may be called again to reload
// (fromFile) or only once (AUTH_SECRET).
func keySource(c Config) (m jwt.SigningMethod, load func() (*keySet, error), fromFile bool, err error) {
	alg := strings.ToUpper(strings.TrimSpace(c.Algorithm))
	switch alg {
	case AlgHS256, "": // "" is a Config built in code: the default
		if c.PublicKeyFile != "" || c.JWKSFile != "" {
			return nil, nil, false, errors.New("AUTH_PUBLIC_KEY_FILE/AUTH_JWKS_FILE: only for AUTH_ALGORITHM=RS256 or ES256; HS256 uses AUTH_SECRET")
		}
		return jwt.SigningMethodHS256, func() (*keySet, error) {
			keys, plain, err := ParseSecrets(c.Secret)
			if err != nil {
				return nil, err
			}
			var def any // stays a nil interface without a plain secret
			if plain != nil {
				def = plain
			}
			return newKeySet(keys, def)
		}, false, nil
	case AlgRS256, AlgES256:
		m = jwt.SigningMethodRS256
		if alg == AlgES256 {
			m = jwt.SigningMethodES256
		}
	default:
		return nil, nil, false, fmt.Errorf("AUTH_ALGORITHM: %q is not HS256, RS256 or ES256", c.Algorithm)
	}
	switch {
	case c.Secret != "":
		return nil, nil, false, fmt.Errorf("AUTH_SECRET: must be empty with AUTH_ALGORITHM=%s (public keys come from AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_FILE)", alg)
	case c.PublicKeyFile != "" && c.JWKSFile != "":
		return nil, nil, false, errors.New("AUTH_PUBLIC_KEY_FILE, AUTH_JWKS_FILE: set only one")
	case c.PublicKeyFile != "":
		return m, func() (*keySet, error) {
			k, err := loadPEMKey(c.PublicKeyFile, alg)
			return fileKeys("AUTH_PUBLIC_KEY_FILE", nil, k, err)
		}, true, nil
	case c.JWKSFile != "":
		return m, func() (*keySet, error) {
			keys, def, err := loadJWKS(c.JWKSFile, alg)
			return fileKeys("AUTH_JWKS_FILE", keys, def, err)
		}, true, nil
	}
	return nil, nil, false, fmt.Errorf("AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_FILE: required with AUTH_ALGORITHM=%s", alg)
}

// fileKeys makes the key set of what a key file loader returned; name is
// the file's variable, for errors.
func fileKeys(name string, byKID map[string]any, def any, err error) (*keySet, error) {
	if err != nil {
		return nil, err
	}
	set, err := newKeySet(byKID, def)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return set, nil
}

var kidPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ParseSecrets splits AUTH_SECRET into secrets by kid and the plain secret
// (nil when every entry has a kid). Errors name an entry by its position and
// quote nothing from the value: what parses as a kid may be the start of a
// secret that contains a colon.
func ParseSecrets(s string) (byKID map[string]any, plain []byte, err error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil, errors.New("AUTH_SECRET: required with AUTH_ALGORITHM=HS256")
	}
	entryOf := map[string]int{} // kid → entry number, for duplicates
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		n := i + 1
		if entry == "" {
			return nil, nil, fmt.Errorf("AUTH_SECRET: entry %d is empty", n)
		}
		kid, secret, hasKID := strings.Cut(entry, ":")
		if !hasKID {
			if plain != nil {
				return nil, nil, errors.New("AUTH_SECRET: more than one secret without a kid; write them as kid:secret")
			}
			if len(entry) < MinSecretBytes {
				return nil, nil, fmt.Errorf("AUTH_SECRET: entry %d: must be at least %d bytes", n, MinSecretBytes)
			}
			plain = []byte(entry)
			continue
		}
		if !kidPattern.MatchString(kid) {
			return nil, nil, fmt.Errorf("AUTH_SECRET: entry %d: kid must be 1-64 characters of [A-Za-z0-9._-] (a plain secret cannot contain ':')", n)
		}
		if len(secret) < MinSecretBytes {
			return nil, nil, fmt.Errorf("AUTH_SECRET: entry %d: the secret after the kid must be at least %d bytes (a plain secret cannot contain ':')", n, MinSecretBytes)
		}
		if first, dup := entryOf[kid]; dup {
			return nil, nil, fmt.Errorf("AUTH_SECRET: entries %d and %d have the same kid", first, n)
		}
		entryOf[kid] = n
		if byKID == nil {
			byKID = map[string]any{}
		}
		byKID[kid] = []byte(secret)
	}
	return byKID, plain, nil
}

// SigningSecret is the AUTH_SECRET entry used to mint tokens: the first one.
// kid is "" for a plain secret.
func (c Config) SigningSecret() (kid string, secret []byte, err error) {
	if _, _, err := ParseSecrets(c.Secret); err != nil {
		return "", nil, err
	}
	first, _, _ := strings.Cut(c.Secret, ",")
	first = strings.TrimSpace(first)
	if k, s, ok := strings.Cut(first, ":"); ok {
		return k, []byte(s), nil
	}
	return "", []byte(first), nil
}

func loadPEMKey(path, alg string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("AUTH_PUBLIC_KEY_FILE: %w", err)
	}
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("AUTH_PUBLIC_KEY_FILE: %s holds no PEM block", path)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("AUTH_PUBLIC_KEY_FILE: %s holds more than one PEM block; use AUTH_JWKS_FILE for several keys", path)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("AUTH_PUBLIC_KEY_FILE: PEM block %q is not a public key (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("AUTH_PUBLIC_KEY_FILE: %w", err)
	}
	if err := checkKey(key, alg); err != nil {
		return nil, fmt.Errorf("AUTH_PUBLIC_KEY_FILE: %w", err)
	}
	return key, nil
}

// checkKey makes sure key suits alg: RS256 needs RSA of at least 2048 bits,
// ES256 an EC key on P-256.
func checkKey(key any, alg string) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if alg != AlgRS256 {
			return fmt.Errorf("an RSA key cannot verify %s", alg)
		}
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key of %d bits; at least %d required", k.N.BitLen(), MinRSABits)
		}
	case *ecdsa.PublicKey:
		if alg != AlgES256 {
			return fmt.Errorf("an EC key cannot verify %s", alg)
		}
		if k.Curve != elliptic.P256() {
			return errors.New("ES256 needs a P-256 key")
		}
	default:
		return fmt.Errorf("a %T cannot verify %s", key, alg)
	}
	return nil
}

// jwk is the subset of RFC 7517/7518 the verifier reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// loadJWKS reads the keys of a JWKS file that can verify alg. Keys for other
// uses or algorithms are skipped (a JWKS often publishes several kinds); a
// key of the right kind that does not parse is an error, so a broken
// rotation is noticed at start rather than when the first client is refused.
func loadJWKS(path, alg string) (map[string]any, any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("AUTH_JWKS_FILE: %w", err)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, nil, fmt.Errorf("AUTH_JWKS_FILE: %s is not a JWKS document: %w", path, err)
	}
	keys := map[string]any{}
	var def any
	wantKty := "RSA"
	if alg == AlgES256 {
		wantKty = "EC"
	}
	for i, k := range set.Keys {
		if k.Kty != wantKty || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != alg) {
			continue
		}
		var key any
		switch k.Kty {
		case "RSA":
			key, err = rsaFromJWK(k)
		case "EC":
			key, err = ecFromJWK(k)
		}
		if err == nil {
			err = checkKey(key, alg)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("AUTH_JWKS_FILE: key %d (kid %q): %w", i, k.Kid, err)
		}
		if k.Kid == "" {
			if def != nil {
				return nil, nil, errors.New("AUTH_JWKS_FILE: more than one key without a kid")
			}
			def = key
			continue
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, nil, fmt.Errorf("AUTH_JWKS_FILE: kid %q appears twice", k.Kid)
		}
		keys[k.Kid] = key
	}
	if len(keys) == 0 && def == nil {
		return nil, nil, fmt.Errorf("AUTH_JWKS_FILE: %s holds no %s signing key (kty %s)", path, alg, wantKty)
	}
	if len(keys) == 0 {
		keys = nil
	}
	return keys, def, nil
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func rsaFromJWK(k jwk) (*rsa.PublicKey, error) {
	n, err := b64(k.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("bad modulus n")
	}
	e, err := b64(k.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("bad exponent e")
	}
	exp := new(big.Int).SetBytes(e)
	if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64()%2 == 0 || exp.Int64() > 1<<31-1 {
		return nil, errors.New("bad exponent e")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}, nil
}

func ecFromJWK(k jwk) (*ecdsa.PublicKey, error) {
	if k.Crv != "P-256" {
		return nil, fmt.Errorf("curve %q is not P-256", k.Crv)
	}
	x, errX := b64(k.X)
	y, errY := b64(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("bad coordinates x/y")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, errors.New("point is not on P-256")
	}
	return pub, nil
}
