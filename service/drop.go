package service

import "github.com/shoal-gw/shoal/bus"

// DropReason says which messages of a connection a shard dropped.
type DropReason string

// Reasons a shard drops messages (see docs/bus.md, dropped events).
const (
	// DropRateLimit: messages from the client, sent faster than its rate
	// limit allows; they never reached the service.
	DropRateLimit DropReason = bus.DropRateLimit
	// DropQueueFull: messages to the client, the oldest first, because it
	// read too slowly and the service's slow-consumer policy is
	// drop-oldest.
	DropQueueFull DropReason = bus.DropQueueFull
)

// DropHandler may be implemented by a Handler that wants to hear when a
// shard dropped messages of a connection, so that it can tell the client
// in its own protocol ("slow down", "12 updates skipped"): the shard never
// writes messages of its own making into a client's stream. Without it,
// dropped events are ignored. Dropped is called in order with the
// connection's other events, with a count of at least 1: the messages
// dropped since the connection's previous dropped event of that reason.
// A shard reports at once, then at most once a second per connection,
// and what is left just before the close event.
type DropHandler interface {
	Dropped(c *Conn, reason DropReason, count int)
}

// Dropped calls OnDropped if set.
func (f Funcs) Dropped(c *Conn, reason DropReason, count int) {
	if f.OnDropped != nil {
		f.OnDropped(c, reason, count)
	}
}
