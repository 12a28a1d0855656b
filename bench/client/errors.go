package client

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors, wrapped with context by the functions that return them.
var (
	// ErrClosed reports use of a closed Engine or Conn.
	ErrClosed = errors.New("client: closed")
	// ErrBadURL reports a target URL the engine cannot dial.
	ErrBadURL = errors.New("client: bad URL")
	// ErrBadSource reports a source address range that cannot be parsed.
	ErrBadSource = errors.New("client: bad source address range")
	// ErrQueueFull reports a Send that would grow a connection's write queue
	// beyond Config.MaxQueue: the server is not reading.
	ErrQueueFull = errors.New("client: write queue full")
	// ErrNotOpen reports a Send before the handshake completed.
	ErrNotOpen = errors.New("client: connection not open")
)

// Failure causes, the keys of a failure count by cause.
const (
	CauseRefused   = "refused"
	CauseTimeout   = "timeout"
	CauseReset     = "reset"
	CauseEOF       = "eof"
	CauseNoAddr    = "no-source-port"
	CauseFiles     = "open-files"
	CauseBadAccept = "handshake bad accept"
	CauseBadReply  = "handshake bad reply"
	CauseProtocol  = "protocol"
	CauseClosed    = "closed by server"
	CauseOther     = "other"
)

// FailError says why a connection failed or ended: Cause is one of the
// Cause constants or "handshake status N".
type FailError struct {
	Cause string
	Err   error
}

// Error implements error.
func (e *FailError) Error() string {
	if e.Err == nil {
		return "client: " + e.Cause
	}
	return "client: " + e.Cause + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *FailError) Unwrap() error { return e.Err }

// statusCause names a handshake answered with a status other than 101.
func statusCause(code int) string { return "handshake status " + strconv.Itoa(code) }

// Cause returns the cause of err if it is a *FailError, else CauseOther.
func Cause(err error) string {
	var fe *FailError
	if errors.As(err, &fe) {
		return fe.Cause
	}
	return CauseOther
}

// CloseError is the server's close frame that ended a connection, the
// Err of a FailError whose Cause is CauseClosed.
type CloseError struct {
	Code   int
	Reason string
}

// Error is the code and the reason: "1012 server restarting".
func (e *CloseError) Error() string { return strconv.Itoa(e.Code) + " " + e.Reason }

// maxReconnectDelay bounds the delay a close reason may ask for: advice
// from the server, not an order to wait forever.
const maxReconnectDelay = 5 * time.Minute

// ReconnectDelay reads the delay a server asks its client to wait before
// reconnecting, from the phrase "reconnect in <N>ms" (or <N>s) in the
// close reason, as a draining shoal worker writes it. ok is false when
// the reason names no delay.
func (e *CloseError) ReconnectDelay() (d time.Duration, ok bool) {
	_, rest, found := strings.Cut(e.Reason, "reconnect in ")
	if !found {
		return 0, false
	}
	n := 0
	for n < len(rest) && (rest[n] >= '0' && rest[n] <= '9' || rest[n] == '.') {
		n++
	}
	v, err := strconv.ParseFloat(rest[:n], 64)
	if err != nil || v < 0 {
		return 0, false
	}
	unit := rest[n:]
	switch {
	case strings.HasPrefix(unit, "ms"):
		d = time.Duration(v * float64(time.Millisecond))
	case strings.HasPrefix(unit, "s"):
		d = time.Duration(v * float64(time.Second))
	default:
		return 0, false
	}
	return min(d, maxReconnectDelay), true
}
