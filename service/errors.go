package service

import (
	"errors"
	"strconv"
)

// Sentinel errors. Errors returned by this package wrap them: test with errors.Is.
var (
	// ErrInvalidConfig reports a Config that New cannot use.
	ErrInvalidConfig = errors.New("service: invalid config")
	// ErrRunning reports a second call of Run on one Service.
	ErrRunning = errors.New("service: already running")
	// ErrInvalidRoom reports a room name outside the bus rules, found locally
	// or in a shard's "invalid room" reply.
	ErrInvalidRoom = errors.New("service: invalid room")
	// ErrInvalidConn reports a connection id that is not "<shard>.<conn>".
	ErrInvalidConn = errors.New("service: invalid connection id")
	// ErrNoConnection reports a shard's "no such connection" reply: the
	// connection closed, or never lived on that shard.
	ErrNoConnection = errors.New("service: no such connection")
	// ErrShardGone reports a command request nobody answered because no shard
	// listens on the subject: the shard exited.
	ErrShardGone = errors.New("service: shard gone")
	// ErrTimeout reports a command request whose reply did not come in time.
	// The command may still have been carried out.
	ErrTimeout = errors.New("service: request timed out")
	// ErrInvalidOpcode reports an Opcode other than Text and Binary.
	ErrInvalidOpcode = errors.New("service: invalid opcode")
	// ErrInvalidCloseCode reports a close code a server may not send
	// (RFC 6455 7.4: 1000-1003, 1007-1014 and 3000-4999 are allowed).
	ErrInvalidCloseCode = errors.New("service: invalid close code")
	// ErrInvalidUser reports a user id with control characters, which
	// cannot travel in a header.
	ErrInvalidUser = errors.New("service: invalid user")
	// ErrCommand reports a shard's failure reply with a message this package
	// does not map to a more precise error.
	ErrCommand = errors.New("service: command failed")

	// ErrNotFound reports a key without a value (never written, or
	// deleted) or a stream message that does not exist.
	ErrNotFound = errors.New("service: not found")
	// ErrKeyExists reports a KV.Create of a key that has a value.
	ErrKeyExists = errors.New("service: key exists")
	// ErrRevisionConflict reports a write whose expected revision (or
	// expected last sequence) was not the current one: someone else wrote
	// first. Read again and retry.
	ErrRevisionConflict = errors.New("service: revision conflict")
	// ErrNoBucket reports a key-value bucket that does not exist (deleted
	// after the handle was made).
	ErrNoBucket = errors.New("service: no such bucket")
	// ErrNoStream reports a stream that does not exist (deleted after the
	// handle was made).
	ErrNoStream = errors.New("service: no such stream")
	// ErrUnavailable reports storage that did not answer: JetStream is
	// down, disabled or overloaded, the connection is closed, or a request
	// timed out (a timed-out write may still have been stored). Retry later.
	ErrUnavailable = errors.New("service: storage unavailable")
	// ErrInvalidKey reports a key outside the key-value rules: non-empty
	// dot-separated tokens of [A-Za-z0-9_=/-].
	ErrInvalidKey = errors.New("service: invalid key")
	// ErrTooLarge reports a value or message larger than its bucket or
	// stream accepts.
	ErrTooLarge = errors.New("service: value too large")
)

// CloseError is an error a Handler's Open may return to close the new
// connection with a chosen close code and reason instead of 1011.
type CloseError struct {
	Code   int
	Reason string
}

// Error returns the code and reason.
func (e *CloseError) Error() string {
	if e.Reason == "" {
		return "service: close " + strconv.Itoa(e.Code)
	}
	return "service: close " + strconv.Itoa(e.Code) + ": " + e.Reason
}
