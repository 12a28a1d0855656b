// Package client is the WebSocket client engine of shoal bench: many
// connections on one epoll instance (shoal's netpoll), with no goroutine per
// connection, so that one process holds tens of thousands of them while
// spending its CPU on the load and not on scheduling.
//
// A connection is a raw non-blocking socket, optionally bound to a source
// address so that loopback runs are not limited by one address's ephemeral
// ports. The handshake request is written raw and the 101 response parsed
// from the socket; frames are read with wire.Reader in the client role and
// written masked. Pings are answered with pongs by the engine itself, so a
// connection with nothing to send is idle yet alive.
package client
