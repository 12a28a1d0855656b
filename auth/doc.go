// Package auth signs and checks the tokens clients present at the
// WebSocket handshake: HS256 JSON Web Tokens whose subject is the user and
// whose audience names the services the token is good for. One secret key,
// kept in a file shared by every worker and service of a deployment, signs
// and checks them all.
//
// A token carries the registered claims sub (the user), aud (service
// names), iat (issued at) and exp (expiry, always set and always checked);
// nbf is checked when present. Only HS256 is accepted: a token that names
// any other algorithm, "none" included, is refused before its signature is
// looked at.
package auth
