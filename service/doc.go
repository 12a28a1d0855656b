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
// The SDK speaks the bus contract described in docs/bus.md and nothing else:
// it imports package bus and nats.go, never sockets or shard code.
package service
