package bus_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

func TestCompactRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kind         byte
		conn, user   string
		binary       bool
		data         []byte
		event, cmd   string
		wantOpcode   string
		wantUserHead bool
	}{
		{kind: bus.CompactMessage, conn: "s1.7", user: "alice", data: []byte("hi"), event: bus.EventMessage, wantOpcode: bus.OpcodeText, wantUserHead: true},
		{kind: bus.CompactMessage, conn: "w-0-1.18446744073709551615", binary: true, data: []byte{0, 1, 2}, event: bus.EventMessage, wantOpcode: bus.OpcodeBinary},
		{kind: bus.CompactMessage, conn: "s1.1", user: strings.Repeat("u", bus.MaxCompactUser), data: nil, event: bus.EventMessage, wantOpcode: bus.OpcodeText, wantUserHead: true},
		{kind: bus.CompactSend, conn: "s1.42", binary: true, data: []byte("\x00m"), cmd: bus.CmdSend, wantOpcode: bus.OpcodeBinary},
		{kind: bus.CompactSend, conn: "s1.42", data: []byte("m\x00\x05s1.42"), cmd: bus.CmdSend, wantOpcode: bus.OpcodeText},
	} {
		var b []byte
		if tc.kind == bus.CompactMessage {
			b = bus.AppendCompactMessage([]byte("keep"), tc.conn, tc.user, tc.binary, tc.data)
		} else {
			b = bus.AppendCompactSend([]byte("keep"), tc.conn, tc.binary, tc.data)
		}
		if !bytes.HasPrefix(b, []byte("keep")) {
			t.Fatalf("%s: the bytes before were overwritten", tc.conn)
		}
		c, err := bus.ParseCompact(b[4:])
		if err != nil {
			t.Fatalf("%s: %v", tc.conn, err)
		}
		if c.Kind != tc.kind || c.Binary != tc.binary || string(c.Conn) != tc.conn || string(c.User) != tc.user || !bytes.Equal(c.Data, tc.data) {
			t.Errorf("%s: parsed %c %v %q user of %d bytes %q", tc.conn, c.Kind, c.Binary, c.Conn, len(c.User), c.Data)
		}
		m := &nats.Msg{Data: b[4:]}
		if err := bus.Expand(m); err != nil {
			t.Fatalf("%s: expand: %v", tc.conn, err)
		}
		h := m.Header
		if h.Get(bus.HeaderConn) != tc.conn || h.Get(bus.HeaderEvent) != tc.event || h.Get(bus.HeaderCmd) != tc.cmd ||
			h.Get(bus.HeaderOpcode) != tc.wantOpcode || (h.Get(bus.HeaderUser) != "") != tc.wantUserHead || !bytes.Equal(m.Data, tc.data) {
			t.Errorf("%s: expanded to %v with %q", tc.conn, h, m.Data)
		}
	}
}

// A message with headers is already in the header form: Expand keeps it.
func TestExpandKeepsHeaders(t *testing.T) {
	m := &nats.Msg{Header: nats.Header{bus.HeaderEvent: {bus.EventOpen}}, Data: []byte("m")}
	if err := bus.Expand(m); err != nil || m.Header.Get(bus.HeaderEvent) != bus.EventOpen || string(m.Data) != "m" {
		t.Fatalf("Expand changed a header-form message: %v %v %q", err, m.Header, m.Data)
	}
}

func TestParseCompactRejects(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		[]byte("m"),
		[]byte("mt"),
		[]byte("xt\x04s1.1"), // unknown kind
		[]byte("s?\x04s1.1"), // unknown opcode
		[]byte("st\x02s1"),   // id too short to be one
		[]byte("st\x56" + strings.Repeat("a", 86)), // id longer than any
		[]byte("st\x09s1.1"),                       // id past the end
		[]byte("mt\x04s1.1"),                       // event without the user length
		[]byte("mt\x04s1.1\x00"),                   // half a user length
		[]byte("mt\x04s1.1\x00\x05bob"),            // user past the end
	} {
		if c, err := bus.ParseCompact(b); !errors.Is(err, bus.ErrCompact) {
			t.Errorf("%q: parsed as %+v, %v", b, c, err)
		}
		m := &nats.Msg{Data: b}
		if err := bus.Expand(m); err == nil || m.Header != nil {
			t.Errorf("%q: expanded", b)
		}
	}
}

// ConnIn accepts exactly what ParseConnID accepts, for its shard.
func TestConnIn(t *testing.T) {
	for _, id := range []string{
		"s1.0", "s1.7", "s1.007", "s1.18446744073709551615", "s1.18446744073709551616",
		"s1.99999999999999999999", "s1.", "s1", ".7", "s1.+7", "s1.-7", "s1.7a", "s2.7", "s10.7", "s1.7.8", "s1..7",
		"s1." + strings.Repeat("0", 30) + "5",
	} {
		shard, want, err := bus.ParseConnID(id)
		wantOK := err == nil && shard == "s1"
		got, ok := bus.ConnIn([]byte(id), "s1")
		if ok != wantOK || (ok && got != want) {
			t.Errorf("ConnIn(%q) = %d, %v; ParseConnID: %q %d %v", id, got, ok, shard, want, err)
		}
	}
}

// FuzzParseCompact: any payload either fails to parse or parses into
// fields that the append functions turn back into the same bytes.
func FuzzParseCompact(f *testing.F) {
	f.Add(bus.AppendCompactMessage(nil, "s1.7", "alice", false, []byte("hi")))
	f.Add(bus.AppendCompactSend(nil, "s1.7", true, []byte{0, 1}))
	f.Add([]byte("mt\x04s1.1\x00\x05bob"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := bus.ParseCompact(b)
		if err != nil {
			return
		}
		var again []byte
		if c.Kind == bus.CompactMessage {
			again = bus.AppendCompactMessage(nil, string(c.Conn), string(c.User), c.Binary, c.Data)
		} else {
			again = bus.AppendCompactSend(nil, string(c.Conn), c.Binary, c.Data)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("%q parsed and appended back as %q", b, again)
		}
	})
}
