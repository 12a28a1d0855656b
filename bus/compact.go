package bus

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// The compact form carries the two messages that move client traffic, the
// message event and the send command, without NATS headers: the metadata
// goes before the client's bytes in the payload. Headers cost every hop
// an encoding, a parse and a map per message (in the shard, in NATS's own
// header check and in the service), which at one event and one command per
// echo was most of what the bus hop spent beyond moving bytes. Every other
// event and command keeps its headers, and both forms are accepted for
// these two: a message without headers on a service or shard subject is
// compact. Room and all messages stay verbatim, never enveloped.
//
// Layout:
//
//	byte 0       CompactMessage or CompactSend
//	byte 1       CompactText or CompactBinary
//	byte 2       n, the length of the connection id, 3..MaxConnIDLen
//	n bytes      the connection id "<shard>.<conn>"
//	message events only:
//	  2 bytes    u, the length of the user, big-endian; 0 when none
//	  u bytes    the user
//	the rest     the client's message, byte for byte
const (
	CompactMessage = 'm'
	CompactSend    = 's'
	CompactText    = 't'
	CompactBinary  = 'b'

	// MaxConnIDLen is the longest connection id: a 64-byte shard id, a dot
	// and a 20-digit number.
	MaxConnIDLen = 64 + 1 + 20
	// MaxCompactUser is the longest user a compact message event carries;
	// a longer one travels in the header form.
	MaxCompactUser = 1<<16 - 1
)

// ErrCompact reports a payload that is not a well-formed compact message.
var ErrCompact = errors.New("bus: malformed compact message")

// Compact is a parsed compact message. Its slices alias the payload.
type Compact struct {
	Kind   byte // CompactMessage or CompactSend
	Binary bool
	Conn   []byte
	User   []byte // message events; empty when no user is bound
	Data   []byte
}

// AppendCompactMessage appends the compact message event of data from conn.
// It panics if user is longer than MaxCompactUser: callers choose the form.
func AppendCompactMessage(dst []byte, conn, user string, binary bool, data []byte) []byte {
	if len(user) > MaxCompactUser {
		panic("bus: user too long for the compact form")
	}
	dst = appendCompactHead(dst, CompactMessage, conn, binary)
	dst = append(dst, byte(len(user)>>8), byte(len(user)))
	dst = append(dst, user...)
	return append(dst, data...)
}

// AppendCompactSend appends the compact send command of data to conn.
func AppendCompactSend(dst []byte, conn string, binary bool, data []byte) []byte {
	return append(appendCompactHead(dst, CompactSend, conn, binary), data...)
}

func appendCompactHead(dst []byte, kind byte, conn string, binary bool) []byte {
	op := byte(CompactText)
	if binary {
		op = CompactBinary
	}
	// A longer id cannot come from FormatConnID; truncating keeps the
	// length byte honest and the shard then refuses an id it never issued.
	conn = conn[:min(len(conn), MaxConnIDLen)]
	dst = append(dst, kind, op, byte(len(conn)))
	return append(dst, conn...)
}

// PublishCompactMessage publishes the compact message event of data from
// conn on subject, built in a pooled buffer (nats.go copies it before
// Publish returns), so an event allocates nothing.
func PublishCompactMessage(nc *nats.Conn, subject, conn, user string, binary bool, data []byte) error {
	bp := compactBufs.Get().(*[]byte)
	*bp = AppendCompactMessage((*bp)[:0], conn, user, binary, data)
	return publishPooled(nc, subject, bp)
}

// PublishCompactSend publishes the compact send command of data to conn
// on subject, as PublishCompactMessage does.
func PublishCompactSend(nc *nats.Conn, subject, conn string, binary bool, data []byte) error {
	bp := compactBufs.Get().(*[]byte)
	*bp = AppendCompactSend((*bp)[:0], conn, binary, data)
	return publishPooled(nc, subject, bp)
}

// compactBufs holds *[]byte for the publish functions; a buffer grown past
// compactBufMax by a large message is not kept.
var compactBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const compactBufMax = 64 << 10

func publishPooled(nc *nats.Conn, subject string, bp *[]byte) error {
	err := nc.Publish(subject, *bp)
	if cap(*bp) <= compactBufMax {
		compactBufs.Put(bp)
	}
	return err
}

// ParseCompact parses a compact message. The connection id is checked for
// length only; ConnIn and ParseConnID check its form.
func ParseCompact(b []byte) (Compact, error) {
	if len(b) < 3 {
		return Compact{}, fmt.Errorf("%w: %d bytes", ErrCompact, len(b))
	}
	c := Compact{Kind: b[0]}
	if c.Kind != CompactMessage && c.Kind != CompactSend {
		return Compact{}, fmt.Errorf("%w: kind %q", ErrCompact, b[0])
	}
	switch b[1] {
	case CompactText:
	case CompactBinary:
		c.Binary = true
	default:
		return Compact{}, fmt.Errorf("%w: opcode %q", ErrCompact, b[1])
	}
	n := int(b[2])
	if n < 3 || n > MaxConnIDLen || len(b) < 3+n {
		return Compact{}, fmt.Errorf("%w: connection id of %d bytes", ErrCompact, n)
	}
	c.Conn, b = b[3:3+n], b[3+n:]
	if c.Kind == CompactMessage {
		if len(b) < 2 {
			return Compact{}, fmt.Errorf("%w: no user length", ErrCompact)
		}
		u := int(b[0])<<8 | int(b[1])
		if len(b) < 2+u {
			return Compact{}, fmt.Errorf("%w: user of %d bytes past the end", ErrCompact, u)
		}
		c.User, b = b[2:2+u], b[2+u:]
	}
	c.Data = b
	return c, nil
}

// ConnIn returns the connection number of id if id is a connection id of
// shard, without allocating: what ParseConnID accepts, for one shard.
func ConnIn[T string | []byte](id T, shard string) (uint64, bool) {
	if len(id) < len(shard)+2 || string(id[:len(shard)]) != shard || id[len(shard)] != '.' {
		return 0, false
	}
	digits := id[len(shard)+1:]
	var n uint64
	for i := 0; i < len(digits); i++ {
		d := digits[i]
		if d < '0' || d > '9' {
			return 0, false
		}
		v := n*10 + uint64(d-'0')
		if v/10 != n {
			return 0, false
		}
		n = v
	}
	return n, true
}

// Expand rewrites a compact message in place into its header form, so that
// code reading raw bus traffic (a monitor, a test) sees one form. A message
// with headers is left as it is.
func Expand(m *nats.Msg) error {
	if m.Header != nil {
		return nil
	}
	c, err := ParseCompact(m.Data)
	if err != nil {
		return err
	}
	h := nats.Header{HeaderConn: {string(c.Conn)}}
	if c.Kind == CompactMessage {
		h[HeaderEvent] = []string{EventMessage}
		if len(c.User) > 0 {
			h[HeaderUser] = []string{string(c.User)}
		}
	} else {
		h[HeaderCmd] = []string{CmdSend}
	}
	if c.Binary {
		h[HeaderOpcode] = []string{OpcodeBinary}
	} else {
		h[HeaderOpcode] = []string{OpcodeText}
	}
	m.Header = h
	m.Data = c.Data
	return nil
}
