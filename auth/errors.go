package auth

import "errors"

// Sentinel errors of the package. Every error Verify returns matches
// exactly one of ErrInvalidToken, ErrExpired, ErrNotYetValid, ErrAudience
// and ErrBadKey with errors.Is.
var (
	// ErrInvalidToken: the token is malformed, is not signed with the key,
	// names an algorithm other than HS256, or lacks a claim it needs.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrExpired: the token's expiry has passed. A new token (a new login)
	// cures it.
	ErrExpired = errors.New("auth: token expired")
	// ErrNotYetValid: the token's not-before time has not come.
	ErrNotYetValid = errors.New("auth: token not valid yet")
	// ErrAudience: the token is good, but not for this service.
	ErrAudience = errors.New("auth: token not meant for this service")
	// ErrBadKey: a key file or a key that cannot sign (not 64 hex
	// characters, or shorter than 32 bytes).
	ErrBadKey = errors.New("auth: bad key")
	// ErrNoKeyFile: the key file does not exist. It is returned together
	// with the underlying fs.ErrNotExist.
	ErrNoKeyFile = errors.New("auth: no key file")
	// ErrBadUser: Sign was given a user that a token cannot carry (empty,
	// too long, not UTF-8, or with control characters).
	ErrBadUser = errors.New("auth: bad user")
)
