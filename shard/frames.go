package shard

import (
	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// frames builds the frames of one bus message for its recipients, each
// at most once per shard: the plain frame, and the compressed one for
// connections that negotiated permessage-deflate. Without context takeover
// the compressed bytes depend on the payload alone, so the same compressed
// frame serves every such connection, as the plain one serves the others.
// Both are built on first need: a room whose members all compress never
// frames the plain variant, and one where none does never compresses.
type frames struct {
	data     []byte
	op       ws.OpCode
	plain    []byte
	deflated []byte
	tried    bool // compression was tried; deflated is nil if it did not pay
}

// framesOf frames a message in the header form: a room, all or send message.
func framesOf(m *nats.Msg) frames {
	op := ws.OpText
	if header(m, bus.HeaderOpcode) == bus.OpcodeBinary {
		op = ws.OpBinary
	}
	return frames{data: m.Data, op: op}
}

// forConn is the frame to write to c.
func (f *frames) forConn(c *conn) []byte {
	if n := len(f.data); c.deflate != 0 && n >= wire.MinDeflate && (c.deflate >= wire.DeflateWindowBits || n <= 1<<c.deflate) {
		if !f.tried {
			f.tried = true
			f.deflated, _ = wire.AppendDeflatedFrame(nil, f.op, f.data)
		}
		if f.deflated != nil {
			return f.deflated
		}
	}
	if f.plain == nil {
		p := f.data
		f.plain = wire.AppendFrame(make([]byte, 0, wire.HeaderLen(len(p), false)+len(p)), f.op, true, p)
	}
	return f.plain
}
