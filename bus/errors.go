package bus

import "errors"

// Sentinel errors. Validation errors wrap them, so callers test with errors.Is.
var (
	// ErrInvalidRoom reports a room name outside the rules of ValidRoom.
	ErrInvalidRoom = errors.New("bus: invalid room")
	// ErrInvalidName reports a shard id or service name that is not one token.
	ErrInvalidName = errors.New("bus: invalid name")
	// ErrInvalidConnID reports a connection id not of the form "<shard>.<conn>".
	ErrInvalidConnID = errors.New("bus: invalid connection id")
	// ErrNotReady reports an embedded server that did not accept connections in time.
	ErrNotReady = errors.New("bus: embedded server not ready")
)

// Error texts a shard puts in the Shoal-Error header of a reply. They are
// part of the contract: services in any language match on them.
const (
	ErrTextNoConn      = "no such connection"
	ErrTextInvalidRoom = "invalid room"
	ErrTextBadCommand  = "unknown command"
	ErrTextBadCode     = "invalid close code"
	ErrTextBusDown     = "bus unavailable"
)
