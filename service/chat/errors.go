package chat

import "errors"

// Error codes of the protocol, sent in {"type":"error","code":...}. The
// connection stays open after every one of them. PROTOCOL.md says when
// each is sent and what a client does about it.
const (
	// CodeBadJSON: the frame is not one JSON object (or is binary).
	// Fix the client; nothing was done.
	CodeBadJSON = "bad_json"
	// CodeUnknownType: "type" names no request of the protocol.
	CodeUnknownType = "unknown_type"
	// CodeBadRequest: a field is missing or invalid (user name, room name,
	// password length, text, limit, before/after, id), or the connection
	// is already another user.
	CodeBadRequest = "bad_request"
	// CodeUnauthorized: the request needs a user and the connection has
	// none; register or login first (or connect with a token).
	CodeUnauthorized = "unauthorized"
	// CodeBadCredentials: login with an unknown user or a wrong password.
	CodeBadCredentials = "bad_credentials"
	// CodeUserTaken: register of a name that has an account.
	CodeUserTaken = "user_taken"
	// CodeNoSuchRoom: who, history, say or leave of a room nobody ever
	// joined.
	CodeNoSuchRoom = "no_such_room"
	// CodeNotMember: say or leave in a room this connection is not in.
	CodeNotMember = "not_member"
	// CodeTooLong: say with a text above the service's limit.
	CodeTooLong = "too_long"
	// CodeRateLimited: too many says by this user, or too many register and
	// login attempts on this connection; wait and retry.
	CodeRateLimited = "rate_limited"
	// CodeUnavailable: storage or the bus failed; nothing is known to have
	// happened (a say may still have been stored: it then shows up in the
	// room). Retry after a moment.
	CodeUnavailable = "unavailable"
)

// ErrConfig reports a Config that New cannot use.
var ErrConfig = errors.New("chat: invalid config")

// protoError is a request's failure, sent to the client as an error reply.
type protoError struct {
	code string
	msg  string
}

func (e *protoError) Error() string { return e.code + ": " + e.msg }

func failure(code, msg string) *protoError { return &protoError{code: code, msg: msg} }
