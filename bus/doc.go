// Package bus owns shoal's NATS side: the connection and its reconnects,
// subject and header names, the compact form of the messages that carry
// client traffic, the embedded server with JetStream, and the life
// records shards publish.
//
// Every name that crosses the bus is defined once, in subjects.go and
// compact.go, and documented for services written in other languages in
// docs/bus.md.
package bus
