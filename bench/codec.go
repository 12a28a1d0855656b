package bench

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/gobwas/ws"
)

// Wire protocols the bench speaks, the values of --proto.
const (
	// ProtoBench is the bench protocol of shoal and the peers in
	// bench/peers (see docs/bench.md).
	ProtoBench = "bench"
	// ProtoCentrifugo is Centrifugo's client protocol (v2, JSON).
	ProtoCentrifugo = "centrifugo"
)

// Protocols returns the names --proto takes.
func Protocols() []string { return []string{ProtoBench, ProtoCentrifugo} }

// speaks reports whether a server of protocol proto serves the scenario
// called scenario: Centrifugo has no echo endpoint.
func speaks(proto, scenario string) bool {
	switch proto {
	case ProtoBench:
		return true
	case ProtoCentrifugo:
		return scenario == "connect" || scenario == "fanout"
	}
	return false
}

// WireConn is what a Codec needs of a connection; *client.Conn is one.
type WireConn interface {
	// Index is the connection's number in its bench process.
	Index() int
	// Send writes one data message; it is safe from any goroutine.
	Send(op ws.OpCode, p []byte) error
}

// EventKind says what a server's message meant.
type EventKind uint8

// Event kinds.
const (
	// EventReady: the protocol's session is established, the connection
	// can be used.
	EventReady EventKind = iota + 1
	// EventRefused: the server refused the session (Cause).
	EventRefused
	// EventJoined: the connection is a member of Room.
	EventJoined
	// EventMessage: a bench message (Payload) arrived.
	EventMessage
	// EventUnexpected: the server refused a command or sent something the
	// scenario did not ask for (Cause).
	EventUnexpected
	// EventData: a message the codec leaves to the scenario, which reads
	// the protocol itself (Data): the chat's, once its session is set up.
	EventData
)

// Event is one thing a Codec decoded from the server.
type Event struct {
	Kind    EventKind
	Room    string
	Payload Payload
	Cause   string
	// Data is the server's message of an EventData, valid only until the
	// event's handler returns.
	Data []byte
}

// EventSink receives the events a Codec decodes, with the time their
// bytes were read (unix ns).
type EventSink interface {
	Event(c WireConn, ev Event, now int64)
}

// Codec puts a scenario's actions on the wire in one protocol and decodes
// what the server sends back, so that scenarios (pacing, histograms, loss
// and duplicate accounting) are written once for every target. One codec
// serves one bench process's connections, by Index; its methods follow
// the client.Handler rule: never concurrently for one connection, except
// Publish, which may run beside Decode.
type Codec interface {
	// Start begins the session on a connection whose WebSocket handshake
	// completed. It reports true when the connection is usable at once;
	// otherwise Decode reports EventReady or EventRefused later.
	Start(c WireConn) (ready bool, err error)
	// Join asks the server to make c a member of room; Decode reports
	// EventJoined once it is.
	Join(c WireConn, room string) error
	// Publish sends the bench message p (a Payload header and padding) to
	// every member of room, c's own room.
	Publish(c WireConn, room string, p []byte) error
	// Decode reads one data message of the server's. It answers the
	// protocol's own keepalive itself and reports everything else to sink.
	Decode(c WireConn, op ws.OpCode, p []byte, now int64, sink EventSink)
}

// CodecConfig is what a codec needs from the command line.
type CodecConfig struct {
	// Proto is one of Protocols; empty means ProtoBench.
	Proto string
	// HMACSecret signs Centrifugo connection tokens; empty connects without
	// a token (a server in insecure mode).
	HMACSecret string
	// Offset is the global index of this process's first connection, so
	// that every connection has its own user across processes.
	Offset int
	// Conns is this process's connection count.
	Conns int
}

// NewCodec returns the codec of cfg.Proto.
func NewCodec(cfg CodecConfig) (Codec, error) {
	switch cfg.Proto {
	case "", ProtoBench:
		return benchCodec{}, nil
	case ProtoCentrifugo:
		return newCentrifugoCodec(cfg), nil
	}
	return nil, fmt.Errorf("%w: --proto %q (have %s)", ErrUsage, cfg.Proto, strings.Join(Protocols(), ", "))
}

// benchCodec speaks the bench protocol: "join ROOM" and "joined ROOM" as
// text, bench messages as binary.
type benchCodec struct{}

func (benchCodec) Start(WireConn) (bool, error) { return true, nil }

func (benchCodec) Join(c WireConn, room string) error {
	return c.Send(ws.OpText, []byte("join "+room))
}

func (benchCodec) Publish(c WireConn, _ string, p []byte) error { return c.Send(ws.OpBinary, p) }

func (benchCodec) Decode(c WireConn, op ws.OpCode, p []byte, now int64, sink EventSink) {
	if op == ws.OpText {
		if room, ok := bytes.CutPrefix(p, []byte("joined ")); ok {
			sink.Event(c, Event{Kind: EventJoined, Room: string(room)}, now)
			return
		}
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "text message " + quoteClip(p)}, now)
		return
	}
	pl, ok := ParsePayload(p)
	if !ok {
		sink.Event(c, Event{Kind: EventUnexpected, Cause: fmt.Sprintf("binary message of %d bytes, shorter than a payload header", len(p))}, now)
		return
	}
	sink.Event(c, Event{Kind: EventMessage, Payload: pl}, now)
}

// quoteClip quotes at most the first 64 bytes of p, for a message that
// names what it did not expect.
func quoteClip(p []byte) string {
	if len(p) > 64 {
		return fmt.Sprintf("%q...", p[:64])
	}
	return fmt.Sprintf("%q", p)
}
