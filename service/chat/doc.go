// Package chat is shoal's bundled service: a multi-room chat with
// accounts, presence and history, spoken as JSON text messages on
// ws://ADDR/ws/chat. PROTOCOL.md in this directory is the protocol.
//
// The service keeps everything in JetStream through the service SDK's
// Store: accounts (bcrypt hashes) and rooms in key-value buckets, presence
// in a third bucket updated only by compare-and-set, and messages in one
// stream, a subject per room, whose sequences are the messages' seq. No
// state lives only in memory, so any number of instances (one NATS queue
// group) serve the same chat; each keeps a watched copy of presence and
// rooms in memory to answer without a round trip.
//
// Files by concern: protocol.go (message types, decoding, encoding),
// errors.go (error codes), handler.go (the service.Handler and its
// Config), accounts.go (register, login, tokens), rooms.go (join, leave,
// who), presence.go (the presence bucket's compare-and-set updates),
// mirror.go (the in-memory copy), history.go (say, history, the message
// chain), shards.go (presence of shards that died), ratelimit.go.
package chat
