package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// MaxUser bounds the user a token carries, in bytes: the user travels in
// a header of every event of the connection.
const MaxUser = 256

// alg is the one signing algorithm: a symmetric key shared by whoever signs
// and whoever checks.
var alg = jwt.SigningMethodHS256

// ValidUser reports why user cannot be carried by a token, or nil: it must
// be 1 to MaxUser bytes of UTF-8 without control characters, since it
// becomes a bus header value.
func ValidUser(user string) error {
	switch {
	case user == "":
		return fmt.Errorf("%w: empty", ErrBadUser)
	case len(user) > MaxUser:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadUser, len(user), MaxUser)
	case !utf8.ValidString(user):
		return fmt.Errorf("%w: not UTF-8", ErrBadUser)
	case strings.IndexFunc(user, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: control character", ErrBadUser)
	}
	return nil
}

// Sign returns a token for user, valid for ttl from now, whose audience is
// audience (the service names it is good for). It sets sub, aud, iat and
// exp, but no nbf, so that a host whose clock runs a little behind the
// signer's accepts the token at once.
func (k Key) Sign(user string, audience []string, ttl time.Duration, now time.Time) (token string, expires time.Time, err error) {
	if err := k.check(); err != nil {
		return "", time.Time{}, err
	}
	if err := ValidUser(user); err != nil {
		return "", time.Time{}, err
	}
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("auth: token lifetime %s, want more than 0", ttl)
	}
	// JWT times are whole seconds: truncate so that the expiry returned is
	// the one the token holds.
	now = now.Truncate(time.Second)
	expires = now.Add(ttl).Truncate(time.Second)
	if !expires.After(now) {
		expires = now.Add(time.Second)
	}
	claims := jwt.RegisteredClaims{
		Subject:   user,
		Audience:  jwt.ClaimStrings(audience),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(expires),
	}
	token, err = jwt.NewWithClaims(alg, claims).SignedString([]byte(k))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign: %w", err)
	}
	return token, expires, nil
}

// Verify checks a token's signature (HS256 only: "none" and every other
// algorithm are refused), its expiry (required) and not-before (if set)
// against now, and, when service is not "", that service is in its
// audience. It returns the user: the sub claim, which must pass ValidUser.
//
// Every error matches exactly one of ErrInvalidToken, ErrExpired,
// ErrNotYetValid, ErrAudience (a good token for other services) and
// ErrBadKey (k cannot check anything).
func (k Key) Verify(token, service string, now time.Time) (user string, err error) {
	if err := k.check(); err != nil {
		return "", err
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{alg.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
		// One encoding per token: a token that differs from a signed one
		// only in the unused bits of its base64 is refused, not accepted.
		jwt.WithStrictDecoding(),
	}
	var claims jwt.RegisteredClaims
	_, err = jwt.NewParser(opts...).ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) {
		return []byte(k), nil
	})
	if err := classify(err, &claims, service); err != nil {
		return "", err
	}
	if err := ValidUser(claims.Subject); err != nil {
		return "", fmt.Errorf("%w: sub: %v", ErrInvalidToken, err)
	}
	return claims.Subject, nil
}

// classify turns the jwt package's verdict into one of ours. A forged or
// malformed token is invalid whatever its claims say. The claims of a
// genuinely signed token are judged audience first, since a token for
// another service will not do here even once renewed; claims holds them
// even when their validation failed.
func classify(err error, claims *jwt.RegisteredClaims, service string) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed),
		errors.Is(err, jwt.ErrTokenSignatureInvalid),
		errors.Is(err, jwt.ErrTokenUnverifiable):
		return fmt.Errorf("%w: %v", ErrInvalidToken, err)
	case service != "" && !slices.Contains(claims.Audience, service):
		return fmt.Errorf("%w: not for %q", ErrAudience, service)
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return fmt.Errorf("%w: %v", ErrInvalidToken, err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ErrNotYetValid
	}
	return fmt.Errorf("%w: %v", ErrInvalidToken, err)
}
