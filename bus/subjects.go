package bus

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultPrefix is the first token of every subject unless configured otherwise.
const DefaultPrefix = "shoal"

// Header names. Metadata travels in headers, except in the compact form of
// message events and send commands (compact.go); room and all messages are
// always verbatim, so a shard never parses a payload on the fan-out path.
// NATS header names are case-sensitive on the wire: use them exactly as
// written.
const (
	// HeaderConn carries the connection id "<shard>.<conn>".
	HeaderConn = "Shoal-Conn"
	// HeaderEvent carries the client event on service subjects: EventOpen,
	// EventMessage, EventDropped or EventClose.
	HeaderEvent = "Shoal-Event"
	// HeaderCmd carries the command on shard subjects: CmdSend, CmdJoin, CmdLeave, CmdIdentify or CmdClose.
	HeaderCmd = "Shoal-Cmd"
	// HeaderOpcode is OpcodeText or OpcodeBinary; absent means text.
	HeaderOpcode = "Shoal-Opcode"
	// HeaderRoom names the room of a join or leave command.
	HeaderRoom = "Shoal-Room"
	// HeaderUser carries the user bound to a connection: on events when known,
	// and the new user on identify commands.
	HeaderUser = "Shoal-User"
	// HeaderRemote is the client's "ip:port", on open events.
	HeaderRemote = "Shoal-Remote"
	// HeaderPath is the request URI of the handshake (path and query), on open events.
	HeaderPath = "Shoal-Path"
	// HeaderCloseCode is the close code: on close events the one the client
	// sent (1005 when it sent none, 1006 when the connection dropped without a
	// close frame); on close commands the one to send (default 1000).
	HeaderCloseCode = "Shoal-Close-Code"
	// HeaderCloseReason is the close reason that goes with HeaderCloseCode.
	HeaderCloseReason = "Shoal-Close-Reason"
	// HeaderError is set in the reply to a command that failed; absent on success.
	HeaderError = "Shoal-Error"
	// HeaderDropReason says why a shard dropped messages of a connection, on
	// dropped events: DropRateLimit or DropQueueFull.
	HeaderDropReason = "Shoal-Drop-Reason"
	// HeaderDropCount is how many messages were dropped (decimal, at least 1)
	// since the connection's last dropped event of that reason.
	HeaderDropCount = "Shoal-Drop-Count"
)

// Values of HeaderEvent.
const (
	EventOpen    = "open"
	EventMessage = "message"
	EventClose   = "close"
	// EventDropped tells the service that the shard dropped messages of the
	// connection, so that it can tell the client in its own protocol.
	EventDropped = "dropped"
)

// Values of HeaderDropReason.
const (
	// DropRateLimit: messages from the client, sent faster than its rate
	// limit allows, never reached the service.
	DropRateLimit = "rate_limit"
	// DropQueueFull: messages to the client were dropped, the oldest first,
	// because its outbound queue was full and its service's slow-consumer
	// policy is drop-oldest.
	DropQueueFull = "queue_full"
)

// Values of HeaderCmd.
const (
	CmdSend     = "send"
	CmdJoin     = "join"
	CmdLeave    = "leave"
	CmdIdentify = "identify"
	CmdClose    = "close"
)

// Values of HeaderOpcode.
const (
	OpcodeText   = "text"
	OpcodeBinary = "binary"
)

// Subjects builds subject names under a prefix. The zero value uses DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Service is the subject a service's instances subscribe to, in one queue group.
func (s Subjects) Service(name string) string { return s.p() + ".svc." + name }

// Shard is the subject a shard receives commands on.
func (s Subjects) Shard(id string) string { return s.p() + ".shard." + id }

// Room is the subject whose messages go verbatim to every member of room.
func (s Subjects) Room(room string) string { return s.p() + ".room." + room }

// RoomAll matches every room subject.
func (s Subjects) RoomAll() string { return s.p() + ".room.>" }

// All is the broadcast subject every shard subscribes to.
func (s Subjects) All() string { return s.p() + ".all" }

// Life is the subject a shard publishes its life records on.
func (s Subjects) Life(shard string) string { return s.p() + ".life." + shard }

// LifeAll matches the life records of every shard.
func (s Subjects) LifeAll() string { return s.p() + ".life.*" }

// ValidRoom reports whether name may be a room: 1 to 200 bytes of printable
// ASCII without space, '*' or '>', in non-empty dot-separated tokens. The
// rules keep a room name one well-formed tail of a NATS subject.
func ValidRoom(name string) error {
	if len(name) == 0 || len(name) > 200 {
		return fmt.Errorf("%w: length %d not in 1..200", ErrInvalidRoom, len(name))
	}
	prev := byte('.')
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("%w: byte %#x at %d", ErrInvalidRoom, c, i)
		case c == '*' || c == '>':
			return fmt.Errorf("%w: wildcard %q at %d", ErrInvalidRoom, c, i)
		case c == '.' && prev == '.':
			return fmt.Errorf("%w: empty token at %d", ErrInvalidRoom, i)
		}
		prev = c
	}
	if prev == '.' {
		return fmt.Errorf("%w: ends with a dot", ErrInvalidRoom)
	}
	return nil
}

// ValidShardID reports whether id is one token of [A-Za-z0-9_-], at most 64 bytes.
func ValidShardID(id string) error { return validToken("shard id", id) }

// ValidServiceName applies the shard id rule to a service name.
func ValidServiceName(name string) error { return validToken("service name", name) }

func validToken(what, s string) error {
	if len(s) == 0 || len(s) > 64 {
		return fmt.Errorf("%w: %s %q: length not in 1..64", ErrInvalidName, what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %s %q: byte %q not in [A-Za-z0-9_-]", ErrInvalidName, what, s, c)
		}
	}
	return nil
}

// FormatConnID returns the id "<shard>.<conn>" of a connection.
func FormatConnID(shard string, conn uint64) string {
	b := make([]byte, 0, len(shard)+21)
	b = append(b, shard...)
	b = append(b, '.')
	return string(strconv.AppendUint(b, conn, 10))
}

// ParseConnID splits a connection id made by FormatConnID.
func ParseConnID(s string) (shard string, conn uint64, err error) {
	i := strings.IndexByte(s, '.')
	if i <= 0 || i == len(s)-1 {
		return "", 0, fmt.Errorf("%w: %q", ErrInvalidConnID, s)
	}
	shard = s[:i]
	if validToken("shard id", shard) != nil {
		return "", 0, fmt.Errorf("%w: %q: bad shard", ErrInvalidConnID, s)
	}
	conn, err = strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || s[i+1] == '+' {
		return "", 0, fmt.Errorf("%w: %q: bad number", ErrInvalidConnID, s)
	}
	return shard, conn, nil
}
