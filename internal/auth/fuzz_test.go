package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Fixed keys, so that the seed corpus can hold validly signed tokens.
var (
	fuzzSecret   = []byte("fuzz-secret-0123456789abcdef")
	fuzzSecretK1 = []byte("fuzz-secret-k1-0123456789")
	fuzzSecretK2 = []byte("fuzz-secret-k2-0123456789")
	fuzzECKey    = func() *ecdsa.PrivateKey {
		d := sha256.Sum256([]byte("chat fuzz ES256 key"))
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
		if err != nil {
			panic(err)
		}
		return k
	}()
	// fuzzNow is before the seeds' exp (2100) and after their iat.
	fuzzNow    = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fuzzLeeway = 30 * time.Second
)

type fuzzVerifier struct {
	name string
	v    *Verifier
	alg  string
	// key returns the key an independent check must use for a token
	// header, or nil when no key applies.
	key func(h map[string]any) any
}

func fuzzVerifiers(t testing.TB) []fuzzVerifier {
	t.Helper()
	mk := func(c Config) *Verifier {
		v, err := NewVerifierFromConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		v.now = func() time.Time { return fuzzNow }
		return v
	}
	plain := mk(Config{Secret: string(fuzzSecret), Leeway: fuzzLeeway})
	rot := mk(Config{Secret: "k1:" + string(fuzzSecretK1) + ",k2:" + string(fuzzSecretK2), Issuer: "https://idp.example", Audience: []string{"chat"}, Leeway: fuzzLeeway})
	ecKeys, err := newKeySet(nil, &fuzzECKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ec := newVerifier(jwt.SigningMethodES256, ecKeys, "", nil, fuzzLeeway)
	ec.now = func() time.Time { return fuzzNow }
	return []fuzzVerifier{
		{"HS256 plain", plain, "HS256", func(map[string]any) any { return fuzzSecret }},
		{"HS256 rotation", rot, "HS256", func(h map[string]any) any {
			switch h["kid"] {
			case "k1":
				return fuzzSecretK1
			case "k2":
				return fuzzSecretK2
			}
			return nil
		}},
		{"ES256", ec, "ES256", func(map[string]any) any { return &fuzzECKey.PublicKey }},
	}
}

// FuzzVerify feeds arbitrary token strings and user ids to verifiers of
// each kind. The seed corpus (testdata/fuzz/FuzzVerify) holds valid tokens
// of each verifier and near misses; it runs with go test.
//
// Nothing may panic; a refusal is an *Error with a bounded reason; and a
// token is only ever accepted if an independent check (crypto/hmac,
// crypto/ecdsa, encoding/json) agrees that it is signed with the right key
// for the one configured algorithm and its claims are good for userID.
func FuzzVerify(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.e30.", "u1")
	vs := fuzzVerifiers(f)
	f.Fuzz(func(t *testing.T, token, userID string) {
		for _, fv := range vs {
			err := fv.v.Verify(token, userID)
			if err != nil {
				checkRefusal(t, fv.name, err)
				continue
			}
			if problem := independentCheck(fv, token, userID); problem != "" {
				t.Fatalf("%s accepted a token it must refuse (%s): %q for %q", fv.name, problem, token, userID)
			}
		}
	})
}

// FuzzVerifyClaims signs arbitrary headers and claims with the real keys,
// so that the claim checks (exp, nbf, iat, iss, aud, sub, kid) see inputs a
// mutated token string never reaches. Seed corpus in
// testdata/fuzz/FuzzVerifyClaims.
func FuzzVerifyClaims(f *testing.F) {
	f.Add(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"u1","exp":4102444800}`, "u1")
	vs := fuzzVerifiers(f)
	f.Fuzz(func(t *testing.T, header, payload, userID string) {
		var h map[string]any
		if json.Unmarshal([]byte(header), &h) != nil {
			h = nil // still signed and verified: the parser must cope
		}
		for _, fv := range vs {
			var key any
			switch fv.alg {
			case "HS256":
				if key = fv.key(h); key == nil {
					key = fuzzSecret
				}
			case "ES256":
				key = fuzzECKey
			}
			token, ok := signRaw(fv.alg, key, header, payload)
			if !ok {
				continue
			}
			err := fv.v.Verify(token, userID)
			if err != nil {
				checkRefusal(t, fv.name, err)
				continue
			}
			if problem := independentCheck(fv, token, userID); problem != "" {
				t.Fatalf("%s accepted a token it must refuse (%s): header %s payload %s user %q", fv.name, problem, header, payload, userID)
			}
		}
	})
}

func checkRefusal(t *testing.T, name string, err error) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s: refusal is %T, not *Error: %v", name, err, err)
	}
	for _, r := range Reasons() {
		if ae.Reason == r {
			return
		}
	}
	t.Fatalf("%s: unbounded reason %q", name, ae.Reason)
}

// signRaw signs header.payload (raw JSON as given) with alg.
func signRaw(alg string, key any, header, payload string) (string, bool) {
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(header)) + "." + enc([]byte(payload))
	var m jwt.SigningMethod = jwt.SigningMethodHS256
	if alg == "ES256" {
		m = jwt.SigningMethodES256
	}
	sig, err := m.Sign(signing, key)
	if err != nil {
		return "", false
	}
	return signing + "." + enc(sig), true
}

// independentCheck returns why token must not be accepted by fv for userID,
// or "" if it is fine.
func independentCheck(fv fuzzVerifier, token, userID string) string {
	if !ValidUserID(userID) {
		return "bad userid"
	}
	if len(token) > MaxTokenBytes {
		return "too long"
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "not three segments"
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	pb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "not base64url"
	}
	var h map[string]any
	if json.Unmarshal(hb, &h) != nil {
		return "header not a JSON object"
	}
	if h["alg"] != fv.alg {
		return "algorithm"
	}
	if _, crit := h["crit"]; crit {
		return "crit header"
	}
	key := fv.key(h)
	if key == nil {
		return "no key for kid"
	}
	signing := []byte(parts[0] + "." + parts[1])
	switch k := key.(type) {
	case []byte:
		mac := hmac.New(sha256.New, k)
		mac.Write(signing)
		if !hmac.Equal(mac.Sum(nil), sig) {
			return "HMAC does not match"
		}
	case *ecdsa.PublicKey:
		if len(sig) != 64 {
			return "ECDSA signature length"
		}
		d := sha256.Sum256(signing)
		if !ecdsa.Verify(k, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return "ECDSA signature"
		}
	}
	c, ok := orderedClaims(pb)
	if !ok {
		return "payload not a JSON object"
	}
	now := float64(fuzzNow.Unix())
	lee := fuzzLeeway.Seconds()
	num := func(name string) (float64, bool, string) {
		v, ok := claimCI(c, name)
		if !ok || v == nil {
			return 0, false, ""
		}
		n, isNum := v.(json.Number)
		if !isNum {
			return 0, false, name + " not a number"
		}
		f, err := n.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, false, name + " not finite"
		}
		return f, true, ""
	}
	exp, hasExp, bad := num("exp")
	switch {
	case bad != "":
		return bad
	case !hasExp:
		return "no exp"
	case exp+lee <= now-1:
		return "expired"
	}
	for _, name := range []string{"nbf", "iat"} {
		v, ok, bad := num(name)
		if bad != "" {
			return bad
		}
		if ok && v > now+lee+1 {
			return name + " in the future"
		}
	}
	if sub, _ := claimCI(c, "sub"); sub != userID {
		return "sub is not the userid"
	}
	if fv.v.issuer != "" {
		if iss, _ := claimCI(c, "iss"); iss != fv.v.issuer {
			return "issuer"
		}
	}
	if len(fv.v.audience) > 0 {
		aud, _ := claimCI(c, "aud")
		okAud := false
		switch a := aud.(type) {
		case string:
			okAud = a == "chat"
		case []any:
			for _, x := range a {
				okAud = okAud || x == "chat"
			}
		}
		if !okAud {
			return "audience"
		}
	}
	return ""
}

// claim is one top-level member of the payload, in input order.
type claim struct {
	key string
	val any
}

// orderedClaims reads the payload's members in order, values with numbers
// kept as json.Number.
func orderedClaims(b []byte) ([]claim, bool) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var out []claim
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		out = append(out, claim{tok.(string), v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	return out, true
}

// claimCI finds a claim as encoding/json fills a struct field: the last
// member whose name matches case-insensitively wins.
func claimCI(c []claim, name string) (any, bool) {
	var (
		found any
		ok    bool
	)
	for _, m := range c {
		if strings.EqualFold(m.key, name) {
			found, ok = m.val, true
		}
	}
	return found, ok
}

// TestFuzzSeedsValid keeps the corpus meaningful: the seeds named valid_*
// must still be accepted, so the fuzzer mutates tokens that pass.
func TestFuzzSeedsValid(t *testing.T) {
	vs := fuzzVerifiers(t)
	for file, verifier := range map[string]int{"valid_hs256": 0, "valid_rotation_k1": 1, "valid_rotation_k2": 1, "valid_es256": 2} {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVerify", file))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		token, err1 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		user, err2 := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "string("), ")"))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", file, err1, err2)
		}
		if err := vs[verifier].v.Verify(token, user); err != nil {
			t.Errorf("seed %s refused: %v", file, err)
		}
	}
}
