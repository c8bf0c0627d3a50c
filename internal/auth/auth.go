// Package auth checks the JWTs that open a chat connection and mints them
// for local use.
package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatrelay/chat/internal/ids"
)

// Reasons a token is refused; bounded, for logs and metrics. The client only
// ever sees a bare 401.
const (
	ReasonMissing   = "missing"
	ReasonMalformed = "malformed"
	ReasonSignature = "signature"
	ReasonExpired   = "expired"
	ReasonNoExpiry  = "no_expiry"
	ReasonSubject   = "subject"
	ReasonAlgorithm = "algorithm"
	ReasonNotYet    = "not_yet_valid"
	ReasonUserID    = "bad_userid"
	ReasonOther     = "invalid"
)

// Error is a refused token with its reason.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "token refused (" + e.Reason + "): " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Verifier checks HS256 tokens signed with a shared secret.
type Verifier struct {
	secret []byte
	leeway time.Duration
	parser *jwt.Parser
}

// NewVerifier accepts only HS256 tokens signed with secret, with exp
// required and a small clock skew allowed.
func NewVerifier(secret []byte, leeway time.Duration) (*Verifier, error) {
	if len(secret) < 16 {
		return nil, errors.New("AUTH_SECRET: must be at least 16 bytes")
	}
	return &Verifier{
		secret: secret,
		leeway: leeway,
		// The algorithm is checked in keyFunc rather than with
		// WithValidMethods so that a wrong algorithm gets its own reason.
		parser: jwt.NewParser(
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(leeway),
		),
	}, nil
}

// Verify checks that token is valid and was issued to userID.
func (v *Verifier) Verify(token, userID string) error {
	if token == "" {
		return &Error{ReasonMissing, errors.New("no token")}
	}
	if !ValidUserID(userID) {
		return &Error{ReasonUserID, errors.New("userid must be 1-64 characters of [A-Za-z0-9._:-]")}
	}
	var claims jwt.RegisteredClaims
	_, err := v.parser.ParseWithClaims(token, &claims, v.keyFunc)
	if err != nil {
		return &Error{reason(err), err}
	}
	if claims.Subject != userID {
		return &Error{ReasonSubject, errors.New("sub does not match userid")}
	}
	return nil
}

var errAlgorithm = errors.New("only HS256 tokens are accepted")

func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	if t.Method != jwt.SigningMethodHS256 {
		return nil, errAlgorithm
	}
	return v.secret, nil
}

func reason(err error) string {
	switch {
	case errors.Is(err, errAlgorithm):
		return ReasonAlgorithm
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ReasonSignature
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return ReasonNoExpiry
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ReasonNotYet
	default:
		return ReasonOther
	}
}

// Mint signs an HS256 token for userID valid for ttl — for local use and
// tests; production tokens come from the identity provider.
func Mint(secret []byte, userID string, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
	s, err := t.SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// ValidUserID bounds user ids to characters that are safe in Redis keys
// (no hash-tag braces), channel names, logs and URLs.
func ValidUserID(s string) bool { return ids.ValidCorrelationID(s) }
