package client

import (
	"strings"

	"golang.org/x/sys/unix"
)

// DialQuery is Dial with query (already encoded, such as
// "token=eyJ...") added to the URL's query: a client that comes back with
// something of its own, as a chat user with its token, on an engine
// whose connections otherwise all ask for the same URL.
func (e *Engine) DialQuery(h Handler, idx int, query string) (*Conn, error) {
	if query == "" {
		return e.Dial(h, idx)
	}
	t := e.target(idx)
	sep := "?"
	if strings.Contains(t.path, "?") {
		sep = "&"
	}
	return e.dial(h, idx, t, requestHead(t.host, t.path+sep+query))
}

// Abort ends the connection the way a network failure or a killed client
// does: no close frame, and the socket is reset (SO_LINGER 0), so the
// server reads ECONNRESET instead of a close. The Handler's Closed follows
// with a nil error, as after Close. Calling it twice, or after Close, is
// safe.
func (c *Conn) Abort() {
	c.mu.Lock()
	if c.state < stateClosing {
		// The fd is closed only under mu (finishLocked), so it is still
		// this connection's here.
		_ = unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	c.mu.Unlock()
	c.end(nil)
}
