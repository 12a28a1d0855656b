// Package shard is one worker process of the gateway: the table of its
// WebSocket connections, their rooms, fan-out, bounded outbound queues,
// keepalive and drain. It glues the acceptor (connections in), netpoll
// (readiness, pool, deadlines), wire (frames) and bus (NATS).
//
// A connection costs no goroutine and, while idle, no buffer: reads run on
// pool goroutines when epoll reports readiness, with a pooled buffer held
// only for the length of the read; writes go straight to the socket and
// are queued only when the socket is full. The locks are described in
// LOCKS.md next to this file.
package shard
