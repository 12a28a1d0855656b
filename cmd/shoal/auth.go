package main

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/auth"
)

// Reasons of refused tokens in shoal_handshakes_rejected_total.
const (
	reasonTokenExpired = "token_expired"
	reasonTokenInvalid = "token_invalid"
)

// tokenAuthenticator is a worker's acceptor.Config.Authenticate: a request
// without a token is anonymous (the service decides what that may do); a
// token is checked with key for the route's service and names the user;
// a bad one is refused with 401, counted as expired or invalid, with a
// body that tells the client which.
func tokenAuthenticator(key auth.Key) func(*acceptor.Request) (string, error) {
	return func(r *acceptor.Request) (string, error) {
		token := r.Token()
		if token == "" {
			return "", nil
		}
		user, err := key.Verify(token, r.Service, time.Now())
		if err == nil {
			return user, nil
		}
		reason := reasonTokenInvalid
		if errors.Is(err, auth.ErrExpired) {
			reason = reasonTokenExpired
		}
		return "", &acceptor.RejectError{
			Status: http.StatusUnauthorized,
			Reason: reason,
			Err:    errors.New(strings.TrimPrefix(err.Error(), "auth: ")),
		}
	}
}
