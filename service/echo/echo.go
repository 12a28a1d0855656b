// Package echo is the echo service: it sends every message back to its
// sender unchanged, text as text and binary as binary. Small as it is, it
// proves the whole path client -> shard -> NATS -> service -> NATS -> shard
// -> client, which makes it the first thing to run against a new deployment.
package echo

import (
	"github.com/shoal-gw/shoal/service"
)

// New returns the echo service's Handler.
func New() service.Handler {
	return service.Funcs{
		OnMessage: func(c *service.Conn, op service.Opcode, data []byte) {
			// A failed send means the bus is down; the client will notice the
			// missing echo, and the service has no one else to tell.
			_ = c.Send(op, data)
		},
	}
}
