package shard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
)

// harness is one shard on a real NATS server, with the test playing the
// services' side of the bus.
type harness struct {
	t    testing.TB
	s    *Shard
	nc   *nats.Conn // the services' side
	subj bus.Subjects
	addr string
	evs  chan *nats.Msg // events published to shoal.svc.echo
}

func startShard(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	srv := bustest.RunServer(t)
	shardNC := bustest.Connect(t, srv.ClientURL())
	h := &harness{t: t, nc: bustest.Connect(t, srv.ClientURL()), evs: make(chan *nats.Msg, 4096)}
	bustest.Subscribe(t, h.nc, h.subj.Service("echo"), h.evs)
	must(t, h.nc.Flush())
	cfg := Config{ID: "t1", Addr: "127.0.0.1:0", NATS: shardNC, Services: []string{"echo"}}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	must(t, err)
	must(t, s.Start())
	t.Cleanup(s.Close)
	h.s, h.addr = s, s.Addr().String()
	return h
}

// echoService answers every message event with a send command carrying the
// same payload and opcode, like the echo service does.
func (h *harness) echoService() {
	h.t.Helper()
	sub, err := h.nc.Subscribe(h.subj.Service("echo"), func(m *nats.Msg) {
		// Answer in the compact form, as the service SDK does to a shard
		// whose life records say it takes it. Compact events are parsed,
		// not expanded, so that BenchmarkReadPath_Echo counts no header
		// maps of the test's own.
		if m.Header == nil {
			if c, err := bus.ParseCompact(m.Data); err == nil && c.Kind == bus.CompactMessage {
				h.nc.Publish(h.subj.Shard("t1"), bus.AppendCompactSend(nil, string(c.Conn), c.Binary, c.Data))
			}
			return
		}
		if m.Header.Get(bus.HeaderEvent) == bus.EventMessage {
			bin := m.Header.Get(bus.HeaderOpcode) == bus.OpcodeBinary
			h.nc.Publish(h.subj.Shard("t1"), bus.AppendCompactSend(nil, m.Header.Get(bus.HeaderConn), bin, m.Data))
		}
	})
	must(h.t, err)
	h.t.Cleanup(func() { sub.Unsubscribe() })
	must(h.t, h.nc.Flush())
}

// event waits for the next event of kind, skipping others.
func (h *harness) event(kind string) *nats.Msg {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-h.evs:
			if m.Header.Get(bus.HeaderEvent) == kind {
				return m
			}
		case <-deadline:
			h.t.Fatalf("no %s event", kind)
		}
	}
}

// command sends a command as a request and returns the reply's error text.
func (h *harness) command(cid, cmd string, hdr map[string]string, data []byte) string {
	h.t.Helper()
	m := nats.NewMsg(h.subj.Shard("t1"))
	m.Header.Set(bus.HeaderCmd, cmd)
	m.Header.Set(bus.HeaderConn, cid)
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	m.Data = data
	r, err := h.nc.RequestMsg(m, 10*time.Second)
	must(h.t, err)
	return r.Header.Get(bus.HeaderError)
}

// connect dials and returns the client with its bus connection id.
func (h *harness) connect(target string) (*testClient, string) {
	h.t.Helper()
	tc := dialWS(h.t, h.addr, target)
	open := h.event(bus.EventOpen)
	return tc, open.Header.Get(bus.HeaderConn)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEchoPath(t *testing.T) {
	h := startShard(t, nil)
	h.echoService()
	tc := dialWS(t, h.addr, "/ws/echo?room=a")
	open := h.event(bus.EventOpen)
	if got := open.Header.Get(bus.HeaderPath); got != "/ws/echo?room=a" {
		t.Errorf("open path %q", got)
	}
	if got := open.Header.Get(bus.HeaderRemote); got != tc.c.LocalAddr().String() {
		t.Errorf("open remote %q, want %q", got, tc.c.LocalAddr())
	}
	cid := open.Header.Get(bus.HeaderConn)
	if shard, _, err := bus.ParseConnID(cid); err != nil || shard != "t1" {
		t.Fatalf("conn id %q: %v", cid, err)
	}

	tc.send(ws.OpText, true, []byte("héllo"))
	if op, p := tc.readMessage(); op != ws.OpText || string(p) != "héllo" {
		t.Fatalf("echo: %v %q", op, p)
	}
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	tc.send(ws.OpBinary, true, bin)
	if op, p := tc.readMessage(); op != ws.OpBinary || string(p) != string(bin) {
		t.Fatalf("echo: %v %x", op, p)
	}
	big := bigText(200 << 10)
	tc.send(ws.OpText, true, big)
	if _, p := tc.readMessage(); len(p) != len(big) {
		t.Fatalf("echo of %d bytes came back as %d", len(big), len(p))
	}

	tc.send(ws.OpClose, true, closePayload(1000, "bye"))
	hd, p := tc.read()
	if hd.OpCode != ws.OpClose {
		t.Fatalf("got %v, want the close echo", hd.OpCode)
	}
	if code, reason := wireParse(p); code != 1000 || reason != "bye" {
		t.Fatalf("close echo %d %q", code, reason)
	}
	closeEv := h.event(bus.EventClose)
	if closeEv.Header.Get(bus.HeaderConn) != cid || closeEv.Header.Get(bus.HeaderCloseCode) != "1000" || closeEv.Header.Get(bus.HeaderCloseReason) != "bye" {
		t.Fatalf("close event headers %v", closeEv.Header)
	}
	waitFor(t, "empty table", func() bool { return h.s.Conns() == 0 })
}

func TestEvents(t *testing.T) {
	h := startShard(t, nil)
	tc, cid := h.connect("/ws/echo")
	tc.send(ws.OpBinary, true, []byte{7})
	m := h.event(bus.EventMessage)
	if m.Header.Get(bus.HeaderConn) != cid || m.Header.Get(bus.HeaderOpcode) != bus.OpcodeBinary || string(m.Data) != "\x07" {
		t.Fatalf("message event %v %q", m.Header, m.Data)
	}
	tc.send(ws.OpText, true, []byte("t"))
	if m := h.event(bus.EventMessage); m.Header.Get(bus.HeaderOpcode) == bus.OpcodeBinary || string(m.Data) != "t" {
		t.Fatalf("text message event %v %q", m.Header, m.Data)
	}
	// A dropped TCP connection is reported as 1006.
	tc.c.Close()
	ev := h.event(bus.EventClose)
	if ev.Header.Get(bus.HeaderCloseCode) != "1006" {
		t.Fatalf("close code %q, want 1006", ev.Header.Get(bus.HeaderCloseCode))
	}
}

// A service's message events take the compact form once a compact send
// reached one of its connections, and keep headers before: a service of a
// release before the form never gets one it cannot read.
func TestCompactEventsOnceTheServiceSendsCompact(t *testing.T) {
	h := startShard(t, nil)
	raw := make(chan *nats.Msg, 16)
	sub, err := h.nc.ChanSubscribe(h.subj.Service("echo"), raw)
	must(t, err)
	t.Cleanup(func() { sub.Unsubscribe() })
	must(t, h.nc.Flush())
	next := func() *nats.Msg {
		t.Helper()
		for {
			select {
			case m := <-raw:
				if m.Header.Get(bus.HeaderEvent) != bus.EventOpen {
					return m
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no message event")
			}
		}
	}
	tc, cid := h.connect("/ws/echo")
	tc.send(ws.OpText, true, []byte("one"))
	if m := next(); m.Header.Get(bus.HeaderEvent) != bus.EventMessage || string(m.Data) != "one" {
		t.Fatalf("first event: %v %q, want a header-form message event", m.Header, m.Data)
	}
	// A header-form send proves nothing about the service.
	if e := h.command(cid, bus.CmdSend, nil, []byte("headers")); e != "" {
		t.Fatal(e)
	}
	tc.readMessage()
	tc.send(ws.OpText, true, []byte("two"))
	if m := next(); m.Header == nil {
		t.Fatalf("event after a header-form send is compact: %q", m.Data)
	}
	must(t, h.nc.Publish(h.subj.Shard("t1"), bus.AppendCompactSend(nil, cid, false, []byte("compact"))))
	if _, p := tc.readMessage(); string(p) != "compact" {
		t.Fatalf("client got %q", p)
	}
	tc.send(ws.OpBinary, true, []byte("three"))
	m := next()
	c, err := bus.ParseCompact(m.Data)
	if m.Header != nil || err != nil || c.Kind != bus.CompactMessage || string(c.Conn) != cid || !c.Binary || string(c.Data) != "three" {
		t.Fatalf("event after a compact send: header %v, %+v, %v", m.Header, c, err)
	}
}

func TestCloseWithoutCode(t *testing.T) {
	h := startShard(t, nil)
	tc, _ := h.connect("/ws/echo")
	tc.send(ws.OpClose, true, nil)
	hd, p := tc.read()
	if hd.OpCode != ws.OpClose || len(p) != 0 {
		t.Fatalf("got %v %x, want an empty close", hd.OpCode, p)
	}
	if code := h.event(bus.EventClose).Header.Get(bus.HeaderCloseCode); code != "1005" {
		t.Fatalf("close code %q, want 1005", code)
	}
}

// Each RFC 6455 rule a server enforces, with the close code it must send.
func TestProtocolViolations(t *testing.T) {
	h := startShard(t, func(c *Config) { c.MaxMessage = 4096 })
	frame := func(b0 byte, payload []byte) []byte {
		// A hand-built masked frame with an all-zero key, short payload.
		out := []byte{b0, 0x80 | byte(len(payload)), 0, 0, 0, 0}
		return append(out, payload...)
	}
	cases := []struct {
		name string
		send func(tc *testClient)
		want ws.StatusCode
	}{
		{"unmasked", func(tc *testClient) { tc.raw([]byte{0x81, 0x02, 'h', 'i'}) }, 1002},
		{"reserved opcode", func(tc *testClient) { tc.raw(frame(0x83, nil)) }, 1002},
		{"reserved control opcode", func(tc *testClient) { tc.raw(frame(0x8b, nil)) }, 1002},
		{"rsv1", func(tc *testClient) { tc.raw(frame(0xc1, []byte("x"))) }, 1002},
		{"rsv3", func(tc *testClient) { tc.raw(frame(0x91, []byte("x"))) }, 1002},
		{"fragmented ping", func(tc *testClient) { tc.send(ws.OpPing, false, []byte("x")) }, 1002},
		{"long ping", func(tc *testClient) { tc.send(ws.OpPing, true, bigText(126)) }, 1002},
		{"continuation first", func(tc *testClient) { tc.send(ws.OpContinuation, true, []byte("x")) }, 1002},
		{"text inside fragments", func(tc *testClient) {
			tc.send(ws.OpText, false, []byte("a"))
			tc.send(ws.OpText, true, []byte("b"))
		}, 1002},
		{"invalid utf-8", func(tc *testClient) { tc.send(ws.OpText, true, []byte{'a', 0xc3, 0x28}) }, 1007},
		{"invalid utf-8 across fragments", func(tc *testClient) {
			tc.send(ws.OpText, false, []byte{0xe2, 0x82})
			tc.send(ws.OpContinuation, true, []byte{0x41})
		}, 1007},
		{"too big", func(tc *testClient) { tc.send(ws.OpBinary, true, bigText(4097)) }, 1009},
		{"too big reassembled", func(tc *testClient) {
			tc.send(ws.OpBinary, false, bigText(3000))
			tc.send(ws.OpContinuation, true, bigText(1200))
		}, 1009},
		{"close code 1005", func(tc *testClient) { tc.send(ws.OpClose, true, closePayload(1005, "")) }, 1002},
		{"close code 999", func(tc *testClient) { tc.send(ws.OpClose, true, closePayload(999, "")) }, 1002},
		{"close code 2000", func(tc *testClient) { tc.send(ws.OpClose, true, closePayload(2000, "")) }, 1002},
		{"close payload of one byte", func(tc *testClient) { tc.send(ws.OpClose, true, []byte{3}) }, 1002},
		{"close reason not utf-8", func(tc *testClient) { tc.send(ws.OpClose, true, closePayload(1000, "\xff")) }, 1007},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tc := dialWS(t, h.addr, "/ws/echo")
			c.send(tc)
			tc.expectClose(c.want)
		})
	}
	// Valid close codes are echoed.
	for _, code := range []uint16{1000, 1001, 1003, 1007, 1011, 3000, 4999} {
		tc := dialWS(t, h.addr, "/ws/echo")
		tc.send(ws.OpClose, true, closePayload(code, "r"))
		hd, p := tc.read()
		if got, reason := wireParse(p); hd.OpCode != ws.OpClose || got != int(code) || reason != "r" {
			t.Errorf("close %d echoed as %v %d %q", code, hd.OpCode, got, reason)
		}
		// The close handshake is complete: the server hangs up.
		if _, err := io.Copy(io.Discard, tc.br); err != nil {
			t.Errorf("after the close echo: %v", err)
		}
	}
}

func TestPingAndFragments(t *testing.T) {
	h := startShard(t, nil)
	h.echoService()
	tc, _ := h.connect("/ws/echo")
	tc.send(ws.OpPing, true, []byte("are you there"))
	hd, p := tc.read()
	if hd.OpCode != ws.OpPong || string(p) != "are you there" {
		t.Fatalf("got %v %q, want the pong", hd.OpCode, p)
	}
	// A ping between fragments is answered at once; the message arrives whole.
	tc.send(ws.OpText, false, []byte("frag"))
	tc.send(ws.OpPing, true, []byte("mid"))
	if hd, p := tc.read(); hd.OpCode != ws.OpPong || string(p) != "mid" {
		t.Fatalf("got %v %q, want the pong", hd.OpCode, p)
	}
	tc.send(ws.OpContinuation, false, []byte("men"))
	tc.send(ws.OpContinuation, true, []byte("ted ✓"))
	if op, p := tc.readMessage(); op != ws.OpText || string(p) != "fragmented ✓" {
		t.Fatalf("reassembled %v %q", op, p)
	}
}

func TestHandshakeRouting(t *testing.T) {
	h := startShard(t, nil)
	get := func(path string, ws bool) int {
		req, _ := http.NewRequest("GET", "http://"+h.addr+path, nil)
		if ws {
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			req.Header.Set("Sec-WebSocket-Version", "13")
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		must(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/ws/nosuch", true); got != http.StatusNotFound {
		t.Errorf("unknown service: %d, want 404", got)
	}
	if got := get("/healthz", false); got != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", got)
	}
	if got := get("/elsewhere", false); got != http.StatusNotFound {
		t.Errorf("/elsewhere: %d, want 404", got)
	}
	if got := get("/ws/echo", false); got != http.StatusUpgradeRequired {
		t.Errorf("plain GET of a WebSocket path: %d", got)
	}
}

func TestCommands(t *testing.T) {
	h := startShard(t, nil)
	a, aid := h.connect("/ws/echo")
	b, bid := h.connect("/ws/echo")

	if e := h.command(aid, bus.CmdSend, map[string]string{bus.HeaderOpcode: bus.OpcodeBinary}, []byte{1, 2}); e != "" {
		t.Fatalf("send: %s", e)
	}
	if op, p := a.readMessage(); op != ws.OpBinary || string(p) != "\x01\x02" {
		t.Fatalf("send delivered %v %x", op, p)
	}

	// Join answers after the room subscription is live: a message published
	// right after the reply must arrive.
	for _, id := range []string{aid, bid} {
		if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: "team.general"}, nil); e != "" {
			t.Fatalf("join: %s", e)
		}
	}
	if h.s.Rooms() != 1 {
		t.Fatalf("rooms %d, want 1", h.s.Rooms())
	}
	must(t, h.nc.Publish(h.subj.Room("team.general"), []byte("to the room")))
	for _, c := range []*testClient{a, b} {
		if op, p := c.readMessage(); op != ws.OpText || string(p) != "to the room" {
			t.Fatalf("room message %v %q", op, p)
		}
	}
	if e := h.command(bid, bus.CmdLeave, map[string]string{bus.HeaderRoom: "team.general"}, nil); e != "" {
		t.Fatalf("leave: %s", e)
	}
	must(t, h.nc.Publish(h.subj.Room("team.general"), []byte("only a")))
	must(t, h.nc.Publish(h.subj.All(), []byte("everyone")))
	if _, p := a.readMessage(); string(p) != "only a" {
		t.Fatalf("a got %q", p)
	}
	if _, p := a.readMessage(); string(p) != "everyone" {
		t.Fatalf("a got %q", p)
	}
	if _, p := b.readMessage(); string(p) != "everyone" {
		t.Fatalf("b got %q after leaving, want the broadcast", p)
	}

	if e := h.command(aid, bus.CmdIdentify, map[string]string{bus.HeaderUser: "alice"}, nil); e != "" {
		t.Fatalf("identify: %s", e)
	}
	a.send(ws.OpText, true, []byte("who"))
	if u := h.event(bus.EventMessage).Header.Get(bus.HeaderUser); u != "alice" {
		t.Fatalf("user after identify %q", u)
	}

	for _, bad := range []struct {
		cid, cmd string
		hdr      map[string]string
		want     string
	}{
		{"t1.1", bus.CmdSend, nil, bus.ErrTextNoConn},
		{"other.1", bus.CmdSend, nil, bus.ErrTextNoConn},
		{"garbage", bus.CmdSend, nil, bus.ErrTextNoConn},
		{aid, bus.CmdJoin, map[string]string{bus.HeaderRoom: "a..b"}, bus.ErrTextInvalidRoom},
		{aid, bus.CmdJoin, nil, bus.ErrTextInvalidRoom},
		{aid, "dance", nil, bus.ErrTextBadCommand},
		{aid, bus.CmdClose, map[string]string{bus.HeaderCloseCode: "1005"}, bus.ErrTextBadCode},
	} {
		if e := h.command(bad.cid, bad.cmd, bad.hdr, nil); e != bad.want {
			t.Errorf("%s %s %v: error %q, want %q", bad.cid, bad.cmd, bad.hdr, e, bad.want)
		}
	}

	if e := h.command(bid, bus.CmdClose, map[string]string{bus.HeaderCloseCode: "4001", bus.HeaderCloseReason: "kicked"}, nil); e != "" {
		t.Fatalf("close: %s", e)
	}
	if r := b.expectClose(4001); r != "kicked" {
		t.Fatalf("close reason %q", r)
	}
	waitFor(t, "b to leave the table", func() bool { return h.s.Conns() == 1 })
}

// A client that stops reading is closed; the others keep receiving.
func TestSlowConsumer(t *testing.T) {
	h := startShard(t, func(c *Config) { c.MaxQueue = 256 << 10; c.CloseTimeout = 200 * time.Millisecond })
	slow, sid := h.connect("/ws/echo")
	fast, fid := h.connect("/ws/echo")
	for _, id := range []string{sid, fid} {
		if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: "firehose"}, nil); e != "" {
			t.Fatal(e)
		}
	}
	payload := bigText(32 << 10)
	const n = 800 // 25 MiB: beyond both kernels' socket buffers and the queue
	got := make(chan int, n)
	go func() {
		defer close(got)
		for i := range n {
			_, p := fast.readMessage()
			if len(p) != len(payload) {
				t.Errorf("fast client got %d bytes", len(p))
				return
			}
			got <- i
		}
	}()
	// The fast client is paced to what it reads, as a healthy client on a
	// good network would be; the slow one reads nothing.
	const window = 4
	for i := range n {
		if i >= window {
			if _, ok := <-got; !ok {
				t.Fatal("fast client stopped")
			}
		}
		must(t, h.nc.Publish(h.subj.Room("firehose"), payload))
	}
	for range got {
	}
	ev := h.event(bus.EventClose)
	if ev.Header.Get(bus.HeaderConn) != sid || ev.Header.Get(bus.HeaderCloseCode) != "1008" {
		t.Fatalf("close event %v, want the slow %s with 1008", ev.Header, sid)
	}
	if h.s.Conns() != 1 {
		t.Fatalf("conns %d, want the fast one left", h.s.Conns())
	}
	// The slow client never read, so its close frame could not be
	// delivered: the server hung up after the close deadline.
	slow.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, slow.c); err != nil {
		t.Fatalf("slow client's stream did not end: %v", err)
	}
}

// A peer that reads but answers nothing is closed with 1001 after the idle
// timeout; one that answers nothing and reads nothing either (half-open,
// or stopped) is ended once its close frame cannot be delivered; a peer
// that answers pings stays. Both closes are counted as idle.
func TestKeepalive(t *testing.T) {
	h := startShard(t, func(c *Config) {
		c.PingInterval, c.IdleTimeout, c.CloseTimeout = 100*time.Millisecond, 400*time.Millisecond, 200*time.Millisecond
	})
	_, gone := h.connect("/ws/echo")
	quiet, _ := h.connect("/ws/echo")
	live, _ := h.connect("/ws/echo")
	// live answers every ping, quiet never answers.
	pings := make(chan int, 1)
	go func() {
		n := 0
		for {
			live.c.SetReadDeadline(time.Now().Add(3 * time.Second))
			hd, err := ws.ReadHeader(live.br)
			if err != nil {
				pings <- n
				return
			}
			p := make([]byte, hd.Length)
			io.ReadFull(live.br, p)
			if hd.OpCode == ws.OpPing {
				n++
				live.c.Write(wireMasked(ws.OpPong, p))
				if n == 10 {
					pings <- n
					return
				}
			}
		}
	}()
	quiet.expectClose(1001)
	events := h.connEvents(gone)
	if closed := events[len(events)-1]; closed.Header.Get(bus.HeaderCloseCode) != "1001" || closed.Header.Get(bus.HeaderCloseReason) != "idle timeout" {
		t.Fatalf("close event of the peer that was gone: %v", closed.Header)
	}
	if n := <-pings; n < 10 {
		t.Fatalf("live client saw %d pings before its connection ended", n)
	}
	if st := h.s.Stats(); st.Conns != 1 || st.ServerCloses["idle"] != 2 {
		t.Fatalf("conns %d, server closes %v; want the live client only, after 2 idle closes", st.Conns, st.ServerCloses)
	}
}

func TestShutdownSendsGoingAway(t *testing.T) {
	h := startShard(t, nil)
	life := make(chan *nats.Msg, 64)
	_, err := h.nc.ChanSubscribe(h.subj.Life("t1"), life)
	must(t, err)
	must(t, h.nc.Flush())
	clients := make([]*testClient, 20)
	for i := range clients {
		clients[i] = dialWS(t, h.addr, "/ws/echo")
	}
	waitFor(t, "20 connections", func() bool { return h.s.Conns() == 20 })
	done := make(chan error, 1)
	go func() { done <- h.s.Shutdown(context.Background()) }()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.expectClose(1001)
		}()
	}
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for {
		var rec bus.Life
		m := <-life
		must(t, json.Unmarshal(m.Data, &rec))
		if rec.State == bus.LifeDown {
			break
		}
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Fatal("the shard still accepts after Shutdown")
	}
	must(t, h.s.Shutdown(context.Background()))
}

// A worker drained for a restart tells its clients so: 1012, not 1001.
func TestShutdownForRestart(t *testing.T) {
	h := startShard(t, nil)
	a, b := dialWS(t, h.addr, "/ws/echo"), dialWS(t, h.addr, "/ws/echo")
	waitFor(t, "2 connections", func() bool { return h.s.Conns() == 2 })
	h.s.Restarting()
	done := make(chan error, 1)
	go func() { done <- h.s.Shutdown(context.Background()) }()
	if reason := a.expectClose(1012); !strings.HasPrefix(reason, "server restarting, reconnect in ") {
		t.Fatalf("reason %q", reason)
	}
	b.expectClose(1012)
	must(t, <-done)
}

func TestHeartbeatStats(t *testing.T) {
	h := startShard(t, func(c *Config) { c.HeartbeatInterval = 50 * time.Millisecond })
	h.echoService()
	life := make(chan *nats.Msg, 256)
	_, err := h.nc.ChanSubscribe(h.subj.Life("t1"), life)
	must(t, err)
	tc, _ := h.connect("/ws/echo")
	tc.send(ws.OpText, true, []byte("count me"))
	tc.readMessage()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-life:
			var rec bus.Life
			must(t, json.Unmarshal(m.Data, &rec))
			st := rec.Stats
			if rec.State == bus.LifeHeartbeat && st.Conns == 1 && st.MessagesIn >= 1 && st.MessagesOut >= 1 && st.Upgrades == 1 && st.BytesIn > 0 && st.BytesOut > 0 {
				if rec.Shard != "t1" || rec.IntervalMS != 50 || !rec.Compact {
					t.Fatalf("record %+v", rec)
				}
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat with the connection's counts")
		}
	}
}

func TestMaxMessageMustFitBus(t *testing.T) {
	srv := bustest.RunServer(t)
	nc := bustest.Connect(t, srv.ClientURL())
	_, err := New(Config{ID: "t1", Addr: "127.0.0.1:0", NATS: nc, MaxMessage: nc.MaxPayload()})
	if err == nil {
		t.Fatal("a max message larger than the bus's max payload was accepted")
	}
	if _, err := New(Config{ID: "bad.id", Addr: "127.0.0.1:0", NATS: nc}); err == nil {
		t.Fatal("an invalid shard id was accepted")
	}
	for _, cfg := range []Config{
		{Compress: []string{"nosuch"}},
		{ServiceOrigins: map[string][]string{"nosuch": {"https://a.example.com"}}},
	} {
		cfg.ID, cfg.Addr, cfg.NATS, cfg.Services = "t1", "127.0.0.1:0", nc, []string{"echo"}
		if _, err := New(cfg); err == nil {
			t.Fatalf("settings for a service the shard does not route were accepted: %+v", cfg)
		}
	}
}

func wireParse(p []byte) (int, string) {
	if len(p) < 2 {
		return 1005, ""
	}
	return int(p[0])<<8 | int(p[1]), string(p[2:])
}

// Autobahn 3.2, 4.1.3 and 5.15: the answers to messages that came before a
// protocol violation reach the client before the close frame.
func TestAnswersBeforeProtocolClose(t *testing.T) {
	h := startShard(t, nil)
	h.echoService()
	for _, c := range []struct {
		name string
		bad  func(tc *testClient)
	}{
		{"rsv bits", func(tc *testClient) { tc.raw([]byte{0xa1, 0x80, 0, 0, 0, 0}) }},
		{"reserved opcode", func(tc *testClient) { tc.raw([]byte{0x85, 0x80, 0, 0, 0, 0}) }},
		{"continuation of nothing", func(tc *testClient) { tc.send(ws.OpContinuation, false, []byte("x")) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tc := dialWS(t, h.addr, "/ws/echo")
			tc.send(ws.OpText, true, []byte("Hello, world!"))
			c.bad(tc)
			tc.send(ws.OpPing, true, nil)
			if op, p := tc.readMessage(); op != ws.OpText || string(p) != "Hello, world!" {
				t.Fatalf("got %v %q before the close, want the echo", op, p)
			}
			tc.expectClose(1002)
		})
	}
}

// framesWritten waits until the shard has counted want frames out since
// before, and returns them with the writes that carried them. A writer
// counts its frames once its syscall returned, which can be just after the
// client read them.
func (h *harness) framesWritten(before bus.ShardStats, want uint64) (frames, writes uint64) {
	h.t.Helper()
	waitFor(h.t, "every frame counted", func() bool {
		after := h.s.Stats()
		frames, writes = after.FramesOut-before.FramesOut, after.Writes-before.Writes
		return frames >= want
	})
	if frames != want {
		h.t.Fatalf("%d frames out, want %d", frames, want)
	}
	return frames, writes
}

// TestFanoutBatches: room messages that pile up in the inbox are written
// to each member in batches, one writev for many frames, and still arrive
// complete and in order, interleaved with broadcasts as published.
func TestFanoutBatches(t *testing.T) {
	h := startShard(t, nil)
	var clients []*testClient
	for range 3 {
		c, id := h.connect("/ws/echo")
		if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: "r"}, nil); e != "" {
			t.Fatalf("join: %s", e)
		}
		clients = append(clients, c)
	}
	const n = 200
	before := h.s.Stats()
	// Stall the dispatcher on the first message so that the rest wait in
	// the inbox together.
	h.s.roomsMu.Lock()
	var want []string
	for i := range n {
		subject, msg := h.subj.Room("r"), fmt.Sprintf("m%d", i)
		if i%50 == 49 {
			subject, msg = h.subj.All(), fmt.Sprintf("all%d", i)
		}
		must(t, h.nc.Publish(subject, []byte(msg)))
		want = append(want, msg)
	}
	must(t, h.nc.Flush())
	waitFor(t, "the inbox to fill", func() bool { return len(h.s.inbox) >= n-1 })
	h.s.roomsMu.Unlock()

	for i, c := range clients {
		for _, w := range want {
			if _, p := c.readMessage(); string(p) != w {
				t.Fatalf("client %d got %q, want %q", i, p, w)
			}
		}
	}
	frames, writes := h.framesWritten(before, 3*n)
	// One message at a time would take a write per frame.
	if writes*4 > frames {
		t.Fatalf("%d writes for %d frames: not batched", writes, frames)
	}
	t.Logf("%d frames in %d writes", frames, writes)
}

// A member gets only its own room's share of the messages, so a batch is
// bounded per connection: with messages spread over many rooms each member
// still gets its frames in few writes.
func TestFanoutBatchesPerMember(t *testing.T) {
	h := startShard(t, nil)
	const rooms, n = 10, 400
	var clients []*testClient
	for i := range rooms {
		c, id := h.connect("/ws/echo")
		if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: fmt.Sprint("r", i)}, nil); e != "" {
			t.Fatalf("join: %s", e)
		}
		clients = append(clients, c)
	}
	before := h.s.Stats()
	h.s.roomsMu.Lock()
	for i := range n {
		must(t, h.nc.Publish(h.subj.Room(fmt.Sprint("r", i%rooms)), []byte(fmt.Sprint("m", i))))
	}
	must(t, h.nc.Flush())
	waitFor(t, "the inbox to fill", func() bool { return len(h.s.inbox) >= n-1 })
	h.s.roomsMu.Unlock()

	for i, c := range clients {
		for j := i; j < n; j += rooms {
			if _, p := c.readMessage(); string(p) != fmt.Sprint("m", j) {
				t.Fatalf("client %d got %q, want m%d", i, p, j)
			}
		}
	}
	frames, writes := h.framesWritten(before, n)
	// Each member's 40 frames: a batch bounded by 32 messages over all
	// rooms would take 3 or 4 frames a write.
	if writes*10 > frames {
		t.Fatalf("%d writes for %d frames: not batched per member", writes, frames)
	}
	t.Logf("%d frames in %d writes", frames, writes)
}

// While the dispatcher is behind, the read path leaves what clients send in
// their sockets instead of adding to the backlog the dispatcher will get
// back as commands, which NATS would drop once the inbox is full.
func TestReadWaitsForDispatcher(t *testing.T) {
	h := startShard(t, nil)
	member, id := h.connect("/ws/echo")
	if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: "r"}, nil); e != "" {
		t.Fatalf("join: %s", e)
	}
	sender, _ := h.connect("/ws/echo")
	const n = inboxHigh + 100
	h.s.roomsMu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			h.s.roomsMu.Unlock()
		}
	}
	defer unlock() // a failure below must not leave the dispatcher stuck
	for range n {
		must(t, h.nc.Publish(h.subj.Room("r"), []byte("x")))
	}
	must(t, h.nc.Flush())
	waitFor(t, "the inbox past its high mark", func() bool { return len(h.s.inbox) >= inboxHigh })
	sender.send(ws.OpText, true, []byte("waits"))
	waitFor(t, "the read to stall", func() bool { return h.s.stats.readStalls.Load() == 1 })
	select {
	case m := <-h.evs:
		t.Fatalf("event %v %q while the dispatcher was behind", m.Header, m.Data)
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	if m := h.event(bus.EventMessage); string(m.Data) != "waits" {
		t.Fatalf("message %q, want waits", m.Data)
	}
	for i := range n {
		if _, p := member.readMessage(); string(p) != "x" {
			t.Fatalf("room message %d: %q", i, p)
		}
	}
	if d := h.s.Stats().BusDropped; d != 0 {
		t.Fatalf("%d bus messages dropped", d)
	}
}

// With one P the poller reads inline, with more it hands reads to the pool;
// either way the echo path and a protocol close behave the same. (make test
// also runs the whole package with -cpu 1.)
func TestReadsInlineWithOneP(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			h := startShard(t, nil)
			if want := procs == 1; h.s.inlineReads != want {
				t.Fatalf("inlineReads %v with GOMAXPROCS %d", h.s.inlineReads, procs)
			}
			h.echoService()
			tc := dialWS(t, h.addr, "/ws/echo")
			h.event(bus.EventOpen)
			for i := range 50 {
				msg := fmt.Appendf(nil, "m%d", i)
				tc.send(ws.OpText, true, msg)
				if _, p := tc.readMessage(); string(p) != string(msg) {
					t.Fatalf("echo %d: %q", i, p)
				}
			}
			// An unmasked client frame is a protocol error: the read path
			// must close with 1002 from whichever goroutine it runs on.
			tc.raw([]byte{0x81, 0x01, 'x'})
			tc.expectClose(1002)
			tc.c.Close()
			waitFor(t, "empty table", func() bool { return h.s.Conns() == 0 })
		})
	}
}
