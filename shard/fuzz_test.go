package shard

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/wire"
)

// FuzzCommand feeds what a hostile or buggy service may publish on a
// shard's command subject (any headers, several values for one, any
// payload) to the dispatcher's handling, on a shard with two connections
// over socket pairs. Whatever comes, nothing panics; the connection the
// command does not name is untouched (no byte written to it, no room, its
// user kept); and every byte written to the named one is a well-formed
// server frame.
func FuzzCommand(f *testing.F) {
	for _, s := range []struct {
		cmd, conn, room, opcode, code, reason, user, key, value string
		data                                                    []byte
		reply, twice                                            bool
	}{
		{cmd: bus.CmdSend, conn: "f1.2", opcode: bus.OpcodeBinary, data: []byte{0, 1, 2}},
		{cmd: bus.CmdSend, conn: "f1.2", data: []byte("héllo"), reply: true},
		{cmd: bus.CmdSend, conn: "f1.2", opcode: "text", data: []byte{0xff, 0xfe}},
		{cmd: bus.CmdJoin, conn: "f1.2", room: "team.general", reply: true},
		{cmd: bus.CmdJoin, conn: "f1.2", room: "a..b", reply: true},
		{cmd: bus.CmdJoin, conn: "f1.2", room: "x*", twice: true},
		{cmd: bus.CmdLeave, conn: "f1.2", room: "team.general"},
		{cmd: bus.CmdIdentify, conn: "f1.2", user: "alice\r\nShoal-Conn: f1.1"},
		{cmd: bus.CmdClose, conn: "f1.2", code: "4001", reason: "kicked", reply: true},
		{cmd: bus.CmdClose, conn: "f1.2", code: "1005"},
		{cmd: bus.CmdClose, conn: "f1.2", code: "+1000", reason: "\xff\xfe not utf-8"},
		{cmd: bus.CmdClose, conn: "f1.2", reason: string(bytes.Repeat([]byte("é"), 100))},
		{cmd: bus.CmdClose, conn: "f1.2", code: "99999999999999999999"},
		{cmd: "dance", conn: "f1.2", reply: true},
		{cmd: bus.CmdSend, conn: "f1.1"},
		{cmd: bus.CmdSend, conn: "f1.01"},
		{cmd: bus.CmdSend, conn: "f2.2"},
		{cmd: bus.CmdSend, conn: ".", key: "Shoal-Conn", value: "f1.2"},
		{cmd: bus.CmdSend, conn: "f1.18446744073709551616"},
		{cmd: bus.CmdSend, conn: "f1.2", key: bus.HeaderCmd, value: bus.CmdClose, twice: true},
	} {
		f.Add(s.cmd, s.conn, s.room, s.opcode, s.code, s.reason, s.user, s.key, s.value, s.data, s.reply, s.twice)
	}
	s := fuzzShard(f)
	victim, victimPeer := fuzzConn(f, s, 1)
	victim.user = "victim"
	var target *conn
	var targetPeer int
	var pending []byte // bytes of the target's stream not yet checked
	f.Fuzz(func(t *testing.T, cmd, cid, room, opcode, code, reason, user, key, value string, data []byte, reply, twice bool) {
		if sh, id, err := bus.ParseConnID(cid); err == nil && sh == "f1" && id == 1 {
			return // addressed to the victim: not a command on another connection
		}
		if target == nil || !target.isOpen() {
			if target != nil {
				target.terminate()
				unix.Close(targetPeer)
			}
			target, targetPeer = fuzzConn(t, s, 2)
			pending = nil
		}
		m := &nats.Msg{Subject: s.subj.Shard("f1"), Header: nats.Header{}, Data: data}
		for _, h := range []struct{ k, v string }{
			{bus.HeaderCmd, cmd}, {bus.HeaderConn, cid}, {bus.HeaderRoom, room}, {bus.HeaderOpcode, opcode},
			{bus.HeaderCloseCode, code}, {bus.HeaderCloseReason, reason}, {bus.HeaderUser, user}, {key, value},
		} {
			if h.v == "" {
				continue
			}
			m.Header[h.k] = append(m.Header[h.k], h.v)
			if twice {
				m.Header[h.k] = append(m.Header[h.k], h.v+"x")
			}
		}
		if reply {
			m.Reply = "_INBOX.fuzz"
		}
		s.apply(m)

		if n, _ := unix.Read(victimPeer, make([]byte, 1)); n > 0 {
			t.Fatal("bytes written to the connection the command did not name")
		}
		victim.mu.Lock()
		state, vuser := victim.state, victim.user
		victim.mu.Unlock()
		s.roomsMu.RLock()
		vrooms := len(victim.rooms)
		s.roomsMu.RUnlock()
		if state != stateOpen || vuser != "victim" || vrooms != 0 {
			t.Fatalf("the other connection changed: state %d, user %q, rooms %d", state, vuser, vrooms)
		}
		buf := make([]byte, 256<<10)
		for {
			n, _ := unix.Read(targetPeer, buf)
			if n <= 0 {
				break
			}
			pending = append(pending, buf[:n]...)
		}
		var err error
		if pending, err = checkServerFrames(pending); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzShard is shard "f1" on a real bus, made without Start: no
// dispatcher runs, the fuzz function is it.
func fuzzShard(f *testing.F) *Shard {
	srv := bustest.RunServer(f)
	nc := bustest.Connect(f, srv.ClientURL())
	s, err := New(Config{ID: "f1", Addr: "127.0.0.1:0", NATS: nc, Services: []string{"echo"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	return s
}

// fuzzConn makes a connection of s over a socket pair, in s's table but
// not in its poller, and returns it with the peer's end.
func fuzzConn(t testing.TB, s *Shard, id uint64) (*conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{
		s: s, id: id, cid: bus.FormatConnID("f1", id), route: s.routes["echo"],
		remote: netip.MustParseAddrPort("127.0.0.1:1"), fd: int32(fds[0]),
	}
	s.connsMu.Lock()
	s.conns[id] = c
	s.connsMu.Unlock()
	t.Cleanup(func() {
		c.terminate()
		unix.Close(fds[1])
	})
	return c, fds[1]
}

// checkServerFrames checks the complete frames at the start of p as a
// client would (unmasked, no reserved bits or opcodes, control frames
// whole and short, close payloads with a code a server may send and a
// UTF-8 reason) and returns what is left of an incomplete one. Text is
// not checked for UTF-8: it is the service's payload, passed on as is.
func checkServerFrames(p []byte) ([]byte, error) {
	for len(p) > 0 {
		r := bytes.NewReader(p)
		h, err := ws.ReadHeader(r)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return p, nil
		}
		if err != nil {
			return nil, err
		}
		head := len(p) - r.Len()
		if int64(r.Len()) < h.Length {
			return p, nil
		}
		payload := p[head : head+int(h.Length)]
		switch {
		case h.Masked || h.Rsv != 0 || !h.Fin:
			return nil, errors.New("frame masked, with reserved bits, or fragmented")
		case h.OpCode != ws.OpText && h.OpCode != ws.OpBinary && !h.OpCode.IsControl():
			return nil, errors.New("reserved opcode")
		case h.OpCode.IsControl() && h.Length > 125:
			return nil, errors.New("control frame over 125 bytes")
		case h.OpCode == ws.OpClose && len(payload) == 1:
			return nil, errors.New("close payload of one byte")
		case h.OpCode == ws.OpClose && len(payload) >= 2:
			code, reason := wire.ParseClose(payload)
			if !wire.ValidCloseCode(code) || !utf8.Valid(reason) {
				return nil, errors.New("close frame with an invalid code or reason")
			}
		}
		p = p[head+int(h.Length):]
	}
	return nil, nil
}

// FuzzCompactSend feeds header-less payloads, which a shard reads as
// compact send commands, to the dispatcher on a shard with two connections.
// Nothing panics, the connection a command does not name gets no byte, and
// what reaches the named one is well-formed frames carrying the payload's
// tail.
func FuzzCompactSend(f *testing.F) {
	f.Add(bus.AppendCompactSend(nil, "f1.2", false, []byte("héllo")), false)
	f.Add(bus.AppendCompactSend(nil, "f1.2", true, []byte{0, 1, 2}), true)
	f.Add(bus.AppendCompactSend(nil, "f1.02", false, []byte{0xff}), false)
	f.Add(bus.AppendCompactSend(nil, "f2.2", false, []byte("x")), true)
	f.Add(bus.AppendCompactMessage(nil, "f1.2", "bob", false, []byte("not a command")), true)
	f.Add([]byte("st\x04f1.2"), false)
	f.Add([]byte("st\x09f1.2"), true)
	s := fuzzShard(f)
	_, victimPeer := fuzzConn(f, s, 1)
	_, targetPeer := fuzzConn(f, s, 2)
	buf := make([]byte, 256<<10)
	f.Fuzz(func(t *testing.T, data []byte, reply bool) {
		if c, err := bus.ParseCompact(data); err == nil {
			if id, ok := bus.ConnIn(c.Conn, "f1"); ok && id == 1 {
				return // addressed to the victim
			}
		}
		m := &nats.Msg{Subject: s.subj.Shard("f1"), Data: data}
		if reply {
			m.Reply = "_INBOX.fuzz"
		}
		s.apply(m)
		if n, _ := unix.Read(victimPeer, make([]byte, 1)); n > 0 {
			t.Fatal("bytes written to the connection the command did not name")
		}
		var got []byte
		for {
			n, _ := unix.Read(targetPeer, buf)
			if n <= 0 {
				break
			}
			got = append(got, buf[:n]...)
		}
		c, err := bus.ParseCompact(data)
		id, ok := bus.ConnIn(c.Conn, "f1")
		if err != nil || c.Kind != bus.CompactSend || !ok || id != 2 {
			if len(got) > 0 {
				t.Fatalf("%q is no send to f1.2 but wrote %q", data, got)
			}
			return
		}
		op := ws.OpText
		if c.Binary {
			op = ws.OpBinary
		}
		if want := wire.AppendFrame(nil, op, true, c.Data); !bytes.Equal(got, want) {
			t.Fatalf("%q wrote %q, want the frame %q", data, got, want)
		}
	})
}
