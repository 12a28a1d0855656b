// Package wire reads and writes RFC 6455 frames on byte slices: an incremental frame and
// message reader for non-blocking sockets, incremental UTF-8 validation, close payloads, and
// framing. It does no I/O.
//
// A Reader is meant to live inside every connection. It is 64 bytes on 64-bit platforms
// (asserted by a test) and holds no heap memory while no frame or message is in progress: the
// caller reads a socket into a pooled buffer, hands the bytes to Reader.Feed and takes the
// buffer back. Feed unmasks in place and passes an unfragmented frame that arrived whole
// straight to the Handler as a sub-slice of the caller's buffer; only fragments and frames
// split across reads are copied, into a slice that grows as bytes arrive and is released as
// soon as the message is delivered.
package wire
