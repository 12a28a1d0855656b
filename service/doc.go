// Package service is the Go SDK for shoal services: processes that receive
// client events from the bus and answer by sending to one connection, a room,
// or everyone.
//
// A service implements Handler (or fills a Funcs) and hands it to New with a
// NATS connection it owns. Run subscribes to the service's subject in one
// queue group, so several instances of a service share the events: each event
// is handled by exactly one instance. Within one instance, all events of one
// connection go to the same worker goroutine, so a connection's open, its
// messages and its close are handled in the order the shard published them.
//
// Services keep shared state in a Store (OpenStore), a binding to
// JetStream over the service's one NATS connection: key-value buckets (KV)
// with writes that expect a revision, so instances never overwrite each
// other, and streams (Stream) with ordered appends and range reads. A
// Handler that needs storage or background work before events flow
// implements Starter.
//
// The SDK speaks the bus contract described in docs/bus.md and nothing else:
// it imports package bus and nats.go, never sockets or shard code.
package service
