package shard

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

const deflateOffer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"

// dialDeflate connects with a permessage-deflate offer and checks what the
// server answered: accepted without context takeover either way, or
// declined.
func (h *harness) dialDeflate(target string, accepted bool, offer string) (*testClient, string) {
	h.t.Helper()
	tc, resp := dialWSHeaders(h.t, &net.Dialer{}, h.addr, target, offer)
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	switch {
	case !accepted && ext != "":
		h.t.Fatalf("extension %q accepted where compression is off", ext)
	case accepted && (!strings.HasPrefix(ext, "permessage-deflate") ||
		!strings.Contains(ext, "server_no_context_takeover") || !strings.Contains(ext, "client_no_context_takeover")):
		h.t.Fatalf("response extensions %q, want permessage-deflate without context takeover", ext)
	}
	return tc, h.event(bus.EventOpen).Header.Get(bus.HeaderConn)
}

// readInflated reads the next data message and decompresses it if RSV1 is
// set; it reports whether it was compressed.
func (tc *testClient) readInflated() (ws.OpCode, []byte, bool) {
	tc.t.Helper()
	for {
		hd, p := tc.read()
		if hd.OpCode.IsControl() {
			if hd.OpCode == ws.OpClose {
				code, reason := wire.ParseClose(p)
				tc.t.Fatalf("closed by server: %d %s", code, reason)
			}
			continue
		}
		if hd.Rsv&0x4 == 0 {
			return hd.OpCode, p, false
		}
		out, err := wsflate.DefaultHelper.Decompress(p)
		if err != nil {
			tc.t.Fatalf("server sent bad compressed data: %v", err)
		}
		return hd.OpCode, out, true
	}
}

func TestDeflateEcho(t *testing.T) {
	h := startShard(t, func(c *Config) { c.Compress = []string{"echo"}; c.MaxMessage = 64 << 10 })
	h.echoService()
	tc, _ := h.dialDeflate("/ws/echo", true, deflateOffer)
	text := []byte(strings.Repeat("a compressible sentence, said again and again. ", 40))

	// A compressed message reaches the service decompressed, and the
	// answer comes back compressed.
	tc.raw(wire.AppendMaskedDeflatedFrame(nil, ws.OpText, testMask, text))
	op, got, compressed := tc.readInflated()
	if op != ws.OpText || !bytes.Equal(got, text) || !compressed {
		t.Fatalf("echo: %v, %d bytes, compressed %v", op, len(got), compressed)
	}
	// Plain messages are still fine in both directions; a short answer is
	// not worth compressing.
	tc.send(ws.OpBinary, true, []byte{1, 2, 3})
	if op, got, compressed := tc.readInflated(); op != ws.OpBinary || !bytes.Equal(got, []byte{1, 2, 3}) || compressed {
		t.Fatalf("short echo: %v %x, compressed %v", op, got, compressed)
	}
	// A compressed message fragmented, with a ping between the fragments.
	z := wire.AppendMaskedDeflatedFrame(nil, ws.OpBinary, testMask, text)
	hd, err := ws.ReadHeader(bytes.NewReader(z))
	must(t, err)
	payload := z[len(z)-int(hd.Length):]
	ws.Cipher(payload, testMask, 0)
	first := wire.AppendMaskedFrame(nil, ws.OpBinary, false, testMask, payload[:10])
	first[0] |= 0x40
	tc.raw(first)
	tc.send(ws.OpPing, true, []byte("mid"))
	tc.send(ws.OpContinuation, true, payload[10:])
	if op, got, _ := tc.readInflated(); op != ws.OpBinary || !bytes.Equal(got, text) {
		t.Fatalf("fragmented echo: %v, %d bytes", op, len(got))
	}
}

// A compression bomb is closed with 1009 before it is inflated past the
// message limit; invalid compressed data with 1007.
func TestDeflateLimits(t *testing.T) {
	h := startShard(t, func(c *Config) { c.Compress = []string{"*"}; c.MaxMessage = 64 << 10 })
	bomb, _ := h.dialDeflate("/ws/echo", true, deflateOffer)
	zeros := make([]byte, 4<<20) // 4 MiB of zeros: about 4 KiB compressed
	frame := wire.AppendMaskedDeflatedFrame(nil, ws.OpBinary, testMask, zeros)
	if len(frame) > 64<<10 {
		t.Fatalf("the bomb is %d bytes on the wire, over the limit itself", len(frame))
	}
	bomb.raw(frame)
	bomb.expectClose(1009)
	if ev := h.event(bus.EventClose); ev.Header.Get(bus.HeaderCloseCode) != "1009" {
		t.Fatalf("close event %v", ev.Header)
	}

	bad, _ := h.dialDeflate("/ws/echo", true, deflateOffer)
	junk := wire.AppendMaskedFrame(nil, ws.OpText, true, testMask, []byte{0xff, 0xfe, 0xfd, 0xfc})
	junk[0] |= 0x40
	bad.raw(junk)
	bad.expectClose(1007)
}

// Where compression is off, the offer is declined and a compressed frame
// is a protocol error.
func TestDeflateOff(t *testing.T) {
	h := startShard(t, func(c *Config) { c.Services = []string{"echo", "other"}; c.Compress = []string{"other"} })
	tc, _ := h.dialDeflate("/ws/echo", false, deflateOffer)
	tc.raw(wire.AppendMaskedDeflatedFrame(nil, ws.OpText, testMask, []byte("compressed anyway")))
	tc.expectClose(1002)
	// Where it is on, an offer with a parameter RFC 7692 does not define
	// is declined, and a valid one after it accepted.
	_, resp := dialWSHeaders(t, &net.Dialer{}, h.addr, "/ws/other", "Sec-WebSocket-Extensions: permessage-deflate; flavour=mint")
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("invalid offer accepted: %q", ext)
	}
	_, resp = dialWSHeaders(t, &net.Dialer{}, h.addr, "/ws/other", "Sec-WebSocket-Extensions: permessage-deflate; flavour=mint, permessage-deflate")
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(ext, "permessage-deflate") {
		t.Fatalf("second, valid offer not accepted: %q", ext)
	}
}

// A room message is framed once per variant: members that compress get
// the same compressed frame, the others the plain one; a member whose
// window is narrower than the message gets the plain one too.
func TestDeflateFanout(t *testing.T) {
	h := startShard(t, func(c *Config) { c.Compress = []string{"echo"} })
	z1, id1 := h.dialDeflate("/ws/echo", true, deflateOffer)
	z2, id2 := h.dialDeflate("/ws/echo", true, deflateOffer)
	narrow, id3 := h.dialDeflate("/ws/echo", true, "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9")
	plain, id4 := h.connect("/ws/echo")
	for _, id := range []string{id1, id2, id3, id4} {
		if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: "lobby"}, nil); e != "" {
			t.Fatal(e)
		}
	}
	long := []byte(strings.Repeat("the same news for everyone in the lobby. ", 30)) // 1230 bytes
	short := []byte(strings.Repeat("brief news, twice: brief news. ", 10))          // 310 bytes
	huge := bigText(40 << 10)                                                       // past the 32 KiB window: fine for a full window
	for _, p := range [][]byte{long, short, huge} {
		must(t, h.nc.Publish(h.subj.Room("lobby"), p))
		narrowGetsZ := len(p) <= 1<<9
		for _, m := range []struct {
			name string
			tc   *testClient
			want bool
		}{{"deflate 1", z1, true}, {"deflate 2", z2, true}, {"window 9", narrow, narrowGetsZ}, {"plain", plain, false}} {
			op, got, compressed := m.tc.readInflated()
			if op != ws.OpText || !bytes.Equal(got, p) {
				t.Fatalf("%s got %v, %d bytes, want %d", m.name, op, len(got), len(p))
			}
			if compressed != m.want {
				t.Fatalf("%s: compressed %v for %d bytes, want %v", m.name, compressed, len(p), m.want)
			}
		}
	}
	if ext := "server_max_window_bits=9"; !strings.Contains(responseExt(t, h, ext), ext) {
		t.Fatalf("the narrow window was not confirmed in the response")
	}
}

func responseExt(t *testing.T, h *harness, param string) string {
	t.Helper()
	_, resp := dialWSHeaders(t, &net.Dialer{}, h.addr, "/ws/echo", "Sec-WebSocket-Extensions: permessage-deflate; "+param)
	return resp.Header.Get("Sec-WebSocket-Extensions")
}
