package acceptor

import "errors"

// Sentinel errors of the acceptor. Handshake rejections carry an HTTP
// status as well; see [RejectError].
var (
	// ErrWouldBlock is returned by [Listener.Accept] when no connection is
	// waiting.
	ErrWouldBlock = errors.New("acceptor: no connection waiting")
	// ErrClosed is returned by operations on a closed listener or acceptor.
	ErrClosed = errors.New("acceptor: closed")
	// ErrBadAddress is returned by [Listen] for an address it cannot parse.
	ErrBadAddress = errors.New("acceptor: bad listen address")
	// ErrConfig is returned by [New] for an incomplete Config.
	ErrConfig = errors.New("acceptor: incomplete config")
)

// RejectError is a handshake that was refused with an HTTP status. Reason
// names the cause for metrics ("unknown_service", "origin", "auth", ...).
type RejectError struct {
	Status int
	Reason string
	Err    error
}

func (e *RejectError) Error() string {
	if e.Err != nil {
		return "acceptor: rejected (" + e.Reason + "): " + e.Err.Error()
	}
	return "acceptor: rejected (" + e.Reason + ")"
}

func (e *RejectError) Unwrap() error { return e.Err }
