// Package acceptor is where connections enter a shard: SO_REUSEPORT
// listeners, the non-blocking accept loop, the WebSocket handshake through
// gobwas/ws's zero-copy Upgrader, and plain HTTP on the same port.
//
// A connection is accepted as a raw file descriptor and never wrapped in a
// net.Conn on the WebSocket path, so it costs one fd and no runtime poll
// descriptor. The request head is read with readiness from the shard's
// poller, in pieces if need be, under a deadline from the shard's timing
// wheel. A WebSocket request for a known service is upgraded and handed to
// the shard with [Config.Upgraded]; any other request is handed to a
// net/http server together with the bytes already read.
package acceptor
