package client

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func TestParseSources(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		in   string
		want []netip.Addr
	}{
		{"127.0.0.2", []netip.Addr{a("127.0.0.2")}},
		{"127.0.0.2-127.0.0.4", []netip.Addr{a("127.0.0.2"), a("127.0.0.3"), a("127.0.0.4")}},
		{" 10.0.0.1 , 10.0.0.255-10.0.1.1,", []netip.Addr{a("10.0.0.1"), a("10.0.0.255"), a("10.0.1.0"), a("10.0.1.1")}},
		{"127.0.0.9-127.0.0.9", []netip.Addr{a("127.0.0.9")}},
	}
	for _, tc := range cases {
		got, err := ParseSources(tc.in)
		if err != nil {
			t.Errorf("ParseSources(%q): %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("ParseSources(%q) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("ParseSources(%q) = %v, want %v", tc.in, got, tc.want)
				break
			}
		}
	}
	def, err := ParseSources(DefaultSources)
	if err != nil || len(def) != 253 {
		t.Errorf("DefaultSources: %d addresses, %v; want 253", len(def), err)
	}
	for _, bad := range []string{"", " , ", "::1", "127.0.0.5-127.0.0.4", "localhost", "127.0.0.1-::2", "10.0.0.0-10.1.0.1", "127.0.0.1-"} {
		if got, err := ParseSources(bad); !errors.Is(err, ErrBadSource) {
			t.Errorf("ParseSources(%q) = %v, %v; want ErrBadSource", bad, got, err)
		}
	}
}

func TestAcceptFor(t *testing.T) {
	// The example of RFC 6455 section 1.3.
	if got := acceptFor([]byte("dGhlIHNhbXBsZSBub25jZQ==")); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("acceptFor = %q", got)
	}
	k := newKey()
	raw, err := base64.StdEncoding.DecodeString(string(k[:]))
	if err != nil || len(raw) != 16 {
		t.Fatalf("newKey %q: %d bytes, %v; want 16 bytes of base64", k, len(raw), err)
	}
	if k2 := newKey(); k2 == k {
		t.Fatalf("newKey repeated %q", k)
	}
}

func TestNewRejects(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:80/", "ws:///x", "127.0.0.1:80", "ws://127.0.0.1:99999/", "ws://no-such-host.invalid/"} {
		if e, err := New(Config{URL: u}); !errors.Is(err, ErrBadURL) {
			if e != nil {
				e.Close()
			}
			t.Errorf("New(%q): %v, want ErrBadURL", u, err)
		}
	}
	if e, err := New(Config{URL: "ws://127.0.0.1:80/", Sources: []netip.Addr{netip.MustParseAddr("::1")}}); !errors.Is(err, ErrBadSource) {
		if e != nil {
			e.Close()
		}
		t.Errorf("IPv6 source for an IPv4 target: %v, want ErrBadSource", err)
	}
	u, _ := url.Parse("ws://127.0.0.1/x")
	if ap, err := ResolveTarget(u); err != nil || ap.Port() != 80 {
		t.Errorf("ResolveTarget without a port = %v, %v; want port 80", ap, err)
	}
}

func TestHandshakeRequest(t *testing.T) {
	got := make(chan *http.Request, 1)
	srv := startServer(t, rawServe(got, func(key string) []byte { return switching(acceptOf(key)) }, nil))
	e := newEngine(t, Config{URL: srv.url("/ws/echo?x=1")})
	r := newRecorder(1)
	c := open(t, e, r)
	req := recv(t, got, "request")
	if req.Method != http.MethodGet || req.RequestURI != "/ws/echo?x=1" || req.Host != srv.ln.Addr().String() {
		t.Errorf("request %s %s Host %s", req.Method, req.RequestURI, req.Host)
	}
	for k, v := range map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"} {
		if got := req.Header.Get(k); !strings.EqualFold(got, v) {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if raw, err := base64.StdEncoding.DecodeString(req.Header.Get("Sec-WebSocket-Key")); err != nil || len(raw) != 16 {
		t.Errorf("Sec-WebSocket-Key %q", req.Header.Get("Sec-WebSocket-Key"))
	}
	if c.Opened() < c.Started() || c.Started() == 0 {
		t.Errorf("Started %d, Opened %d", c.Started(), c.Opened())
	}
	if e.Open() != 1 {
		t.Errorf("Open() = %d, want 1", e.Open())
	}
}

func TestHandshakeOutcomes(t *testing.T) {
	long := "X-Filler: " + strings.Repeat("a", maxResponse) + "\r\n"
	cases := []struct {
		name  string
		reply func(key string) []byte
		after func(net.Conn, *bufio.Reader)
		cause string // "" for success
	}{
		{name: "ok", reply: func(k string) []byte { return switching(acceptOf(k)) }},
		{name: "ok lower-case header and HTTP/1.0", reply: func(k string) []byte {
			return []byte("HTTP/1.0 101 x\r\nsec-websocket-accept:   " + acceptOf(k) + "  \r\n\r\n")
		}},
		{name: "wrong accept", cause: CauseBadAccept, reply: func(k string) []byte { return switching(acceptOf(k + "x")) }},
		{name: "no accept", cause: CauseBadAccept, reply: func(string) []byte {
			return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
		}},
		{name: "status 403", cause: "handshake status 403", reply: func(k string) []byte {
			return []byte("HTTP/1.1 403 Forbidden\r\nSec-WebSocket-Accept: " + acceptOf(k) + "\r\nContent-Length: 0\r\n\r\n")
		}},
		{name: "status 200", cause: "handshake status 200", reply: func(string) []byte {
			return []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}},
		{name: "bad status line", cause: CauseBadReply, reply: func(string) []byte { return []byte("SPDY/3 101 x\r\n\r\n") }},
		{name: "status not a number", cause: CauseBadReply, reply: func(string) []byte { return []byte("HTTP/1.1 1x1 x\r\n\r\n") }},
		{name: "headers too long", cause: CauseBadReply, reply: func(string) []byte {
			return []byte("HTTP/1.1 101 Switching Protocols\r\n" + long)
		}},
		{name: "truncated", cause: CauseEOF, reply: func(k string) []byte {
			return []byte("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + acceptOf(k) + "\r\n")
		}, after: func(net.Conn, *bufio.Reader) {}},
		{name: "nothing", cause: CauseEOF, reply: func(string) []byte { return nil }, after: func(net.Conn, *bufio.Reader) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, rawServe(nil, tc.reply, tc.after))
			e := newEngine(t, Config{URL: srv.url("/")})
			r := newRecorder(1)
			c := dial(t, e, r, 7)
			if tc.cause == "" {
				if got := recv(t, r.opens, "Open"); got != c || got.Index() != 7 {
					t.Fatalf("Open for %p index %d", got, got.Index())
				}
				none(t, r.closes, "Closed")
				return
			}
			wantCause(t, r, tc.cause)
			none(t, r.opens, "Open")
			if c.Opened() != 0 || e.Open() != 0 {
				t.Errorf("failed handshake: Opened %d, engine Open %d", c.Opened(), e.Open())
			}
			if err := c.Send(ws.OpText, []byte("x")); !errors.Is(err, ErrClosed) {
				t.Errorf("Send after failure: %v, want ErrClosed", err)
			}
		})
	}
}

// The response may arrive in pieces, and frames may follow it in the same
// segment; both reach the handler.
func TestHandshakeInPiecesThenFrames(t *testing.T) {
	srv := startServer(t, rawServe(nil, func(k string) []byte {
		var b bytes.Buffer
		b.Write(switching(acceptOf(k)))
		_ = ws.WriteFrame(&b, ws.NewTextFrame([]byte("early")))
		return b.Bytes()
	}, nil))
	srvSplit := startServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		resp := switching(acceptOf(req.Header.Get("Sec-WebSocket-Key")))
		for i := range resp {
			if _, err := c.Write(resp[i : i+1]); err != nil {
				return
			}
		}
		_ = ws.WriteFrame(c, ws.NewBinaryFrame([]byte("late")))
		_, _ = io.Copy(io.Discard, br)
	})
	for _, tc := range []struct {
		srv  *testServer
		op   ws.OpCode
		want string
	}{{srv, ws.OpText, "early"}, {srvSplit, ws.OpBinary, "late"}} {
		e := newEngine(t, Config{URL: tc.srv.url("/")})
		r := newRecorder(1)
		c := open(t, e, r)
		m := recv(t, r.msgs, "message")
		if m.c != c || m.op != tc.op || string(m.p) != tc.want {
			t.Errorf("got %v %q, want %v %q", m.op, m.p, tc.op, tc.want)
		}
	}
}

func TestResponseIncremental(t *testing.T) {
	e := newEngine(t, Config{URL: "ws://127.0.0.1:1/"})
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	resp := append(switching(acceptOf(key)), 0x81, 0x02, 'h', 'i')
	for split := 0; split <= len(resp); split++ {
		c := &Conn{e: e, h: newRecorder(1)}
		copy(c.key[:], key)
		rest, err := c.response(resp[:split])
		if err == nil && c.opened == 0 {
			rest, err = c.response(resp[split:])
		} else if err == nil {
			rest = append(rest, resp[split:]...)
		}
		if err != nil || c.opened == 0 || c.state != stateOpen || string(rest) != "\x81\x02hi" {
			t.Fatalf("split at %d: open %v, rest %q, err %v", split, c.state == stateOpen, rest, err)
		}
	}
}

func TestHandshakeTimeout(t *testing.T) {
	srv := startServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	e := newEngine(t, Config{URL: srv.url("/"), HandshakeTimeout: 100 * time.Millisecond})
	r := newRecorder(1)
	c := dial(t, e, r, 0)
	if err := c.Send(ws.OpText, []byte("x")); !errors.Is(err, ErrNotOpen) {
		t.Errorf("Send before the handshake: %v, want ErrNotOpen", err)
	}
	wantCause(t, r, CauseTimeout)
	// The server sees the socket closed.
	eventually(t, "server connection gone", func() bool { return srv.live.Load() == 0 })
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := newEngine(t, Config{URL: "ws://" + addr + "/"})
	r := newRecorder(1)
	if _, err := e.Dial(r, 0); err != nil {
		if Cause(err) != CauseRefused {
			t.Fatalf("Dial: %v, want cause %q", err, CauseRefused)
		}
		return
	}
	wantCause(t, r, CauseRefused)
}

func TestSourceAddresses(t *testing.T) {
	remotes := make(chan netip.Addr, 16)
	var unmasked atomic.Int64
	echo := echoServe(&unmasked)
	srv := startServer(t, func(c net.Conn) {
		remotes <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		echo(c)
	})
	srcs, err := ParseSources("127.0.0.2-127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, Config{URL: srv.url("/"), Sources: srcs})
	r := newRecorder(6)
	for i := range 6 {
		dial(t, e, r, i)
	}
	seen := map[netip.Addr]int{}
	for range 6 {
		recv(t, r.opens, "Open")
		seen[recv(t, remotes, "remote address")]++
	}
	for _, s := range srcs {
		if seen[s] != 2 {
			t.Errorf("source %s used %d times, want 2 (round robin): %v", s, seen[s], seen)
		}
	}
}

func TestFramesBothWays(t *testing.T) {
	var unmasked atomic.Int64
	srv := startServer(t, echoServe(&unmasked))
	e := newEngine(t, Config{URL: srv.url("/")})
	r := newRecorder(1)
	c := open(t, e, r)
	big := make([]byte, 3*readBufSize+17) // spans several reads
	for i := range big {
		big[i] = byte(i * 7)
	}
	cases := []struct {
		op ws.OpCode
		p  []byte
	}{
		{ws.OpText, []byte("hello")},
		{ws.OpBinary, []byte{0, 1, 2, 0xff}},
		{ws.OpBinary, nil},
		{ws.OpText, []byte(strings.Repeat("é", 200))}, // 16-bit length
		{ws.OpBinary, big},                            // 64-bit length
	}
	for _, tc := range cases {
		if err := c.Send(tc.op, tc.p); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	for i, tc := range cases {
		m := recv(t, r.msgs, "echo")
		if m.op != tc.op || !bytes.Equal(m.p, tc.p) {
			t.Fatalf("echo %d: %v of %d bytes, want %v of %d", i, m.op, len(m.p), tc.op, len(tc.p))
		}
	}
	if n := unmasked.Load(); n != 0 {
		t.Fatalf("%d unmasked client frames", n)
	}
}

// A server frame that is fragmented is reassembled; a masked one is a
// protocol error, as is a message beyond MaxMessage.
func TestServerFrames(t *testing.T) {
	upgraded := func(send func(net.Conn)) func(net.Conn) {
		return func(c net.Conn) {
			if _, err := ws.Upgrade(c); err != nil {
				return
			}
			send(c)
			_, _ = io.Copy(io.Discard, c)
		}
	}
	t.Run("fragmented", func(t *testing.T) {
		srv := startServer(t, upgraded(func(c net.Conn) {
			_ = ws.WriteFrame(c, ws.NewFrame(ws.OpText, false, []byte("hel")))
			_ = ws.WriteFrame(c, ws.NewPingFrame([]byte("mid")))
			_ = ws.WriteFrame(c, ws.NewFrame(ws.OpContinuation, true, []byte("lo")))
		}))
		r := newRecorder(1)
		open(t, newEngine(t, Config{URL: srv.url("/")}), r)
		if m := recv(t, r.msgs, "message"); m.op != ws.OpText || string(m.p) != "hello" {
			t.Fatalf("got %v %q", m.op, m.p)
		}
	})
	t.Run("masked", func(t *testing.T) {
		srv := startServer(t, upgraded(func(c net.Conn) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame([]byte("masked"))))
		}))
		r := newRecorder(1)
		open(t, newEngine(t, Config{URL: srv.url("/")}), r)
		wantCause(t, r, CauseProtocol)
		none(t, r.msgs, "message")
	})
	t.Run("too big", func(t *testing.T) {
		srv := startServer(t, upgraded(func(c net.Conn) {
			_ = ws.WriteFrame(c, ws.NewBinaryFrame(make([]byte, 2000)))
		}))
		r := newRecorder(1)
		open(t, newEngine(t, Config{URL: srv.url("/"), MaxMessage: 1000}), r)
		wantCause(t, r, CauseProtocol)
	})
}

func TestPingAnswered(t *testing.T) {
	pongs := make(chan []byte, 2)
	srv := startServer(t, func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		for _, p := range []string{"abc", ""} {
			if err := ws.WriteFrame(c, ws.NewPingFrame([]byte(p))); err != nil {
				return
			}
			f, err := readClientFrame(c)
			if err != nil || f.Header.OpCode != ws.OpPong {
				t.Errorf("after ping: %v %v, want a masked pong", f.Header.OpCode, err)
				return
			}
			pongs <- f.Payload
		}
		_, _ = io.Copy(io.Discard, c)
	})
	r := newRecorder(1)
	open(t, newEngine(t, Config{URL: srv.url("/")}), r)
	if p := recv(t, pongs, "pong"); string(p) != "abc" {
		t.Errorf("pong %q, want %q", p, "abc")
	}
	if p := recv(t, pongs, "pong"); len(p) != 0 {
		t.Errorf("pong %q, want empty", p)
	}
	none(t, r.msgs, "message")
	none(t, r.closes, "Closed")
}

func TestServerCloses(t *testing.T) {
	answer := make(chan ws.StatusCode, 1)
	srv := startServer(t, func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		_ = ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
		f, err := readClientFrame(c)
		if err != nil || f.Header.OpCode != ws.OpClose {
			t.Errorf("after close: %v %v, want a masked close", f.Header.OpCode, err)
			return
		}
		code, _ := ws.ParseCloseFrameData(f.Payload)
		answer <- code
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after the close handshake the client did not close its socket: %v", err)
		}
	})
	e := newEngine(t, Config{URL: srv.url("/")})
	r := newRecorder(1)
	c := open(t, e, r)
	err := wantCause(t, r, CauseClosed)
	var ce *CloseError
	if !strings.Contains(err.Error(), "1001 bye") || !errors.As(err, &ce) || ce.Code != 1001 || ce.Reason != "bye" {
		t.Errorf("error %q does not carry the code and reason", err)
	}
	if code := recv(t, answer, "close answer"); code != ws.StatusGoingAway {
		t.Errorf("close answered with %d, want %d", code, ws.StatusGoingAway)
	}
	if err := c.Send(ws.OpText, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after close: %v, want ErrClosed", err)
	}
	eventually(t, "engine Open back to 0", func() bool { return e.Open() == 0 })
}

func TestClientCloses(t *testing.T) {
	got := make(chan ws.StatusCode, 1)
	srv := startServer(t, func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		f, err := readClientFrame(c)
		if err != nil || f.Header.OpCode != ws.OpClose {
			t.Errorf("got %v %v, want a masked close", f.Header.OpCode, err)
			return
		}
		code, _ := ws.ParseCloseFrameData(f.Payload)
		got <- code
	})
	e := newEngine(t, Config{URL: srv.url("/")})
	r := newRecorder(1)
	c := open(t, e, r)
	c.Close()
	c.Close()
	if end := recv(t, r.closes, "Closed"); end.c != c || end.err != nil {
		t.Fatalf("Closed(%p, %v), want nil error", end.c, end.err)
	}
	if code := recv(t, got, "close frame"); code != ws.StatusNormalClosure {
		t.Errorf("close code %d, want %d", code, ws.StatusNormalClosure)
	}
	none(t, r.closes, "second Closed")
	if err := c.Send(ws.OpText, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if e.Open() != 0 {
		t.Errorf("Open() = %d after Close", e.Open())
	}
}

func TestServerDrops(t *testing.T) {
	srv := startServer(t, func(c net.Conn) { _, _ = ws.Upgrade(c) })
	e := newEngine(t, Config{URL: srv.url("/")})
	r := newRecorder(1)
	open(t, e, r)
	wantCause(t, r, CauseEOF)
	if e.Open() != 0 {
		t.Errorf("Open() = %d after the server dropped", e.Open())
	}
}

// A server that does not read lets the write queue grow to MaxQueue and no
// further; once it reads, slowly, every queued message arrives whole and in
// order, and the connection reads meanwhile.
func TestWriteQueueSlowReader(t *testing.T) {
	const size = 16 << 10
	release := make(chan struct{})
	received := make(chan int, 1)
	srv := startServer(t, func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		<-release
		start := time.Now()
		defer func() { t.Logf("server drained in %s", time.Since(start)) }()
		// Small reads: the client's queue drains in many write-ready
		// rounds. (A tiny kernel receive buffer would do the same, but
		// stalls on TCP's persist timer for minutes.)
		br := bufio.NewReaderSize(c, 512)
		n := 0
		for {
			f, err := readClientFrame(br)
			if err != nil {
				t.Errorf("server read: %v", err)
				return
			}
			if f.Header.OpCode == ws.OpText {
				break
			}
			if len(f.Payload) != size || binary.BigEndian.Uint64(f.Payload) != uint64(n) {
				t.Errorf("message %d: %d bytes, seq %d", n, len(f.Payload), binary.BigEndian.Uint64(f.Payload))
				return
			}
			n++
		}
		received <- n
		_ = wsutil.WriteServerMessage(c, ws.OpText, []byte("got "+strconv.Itoa(n)))
		_, _ = io.Copy(io.Discard, br)
	})
	e := newEngine(t, Config{URL: srv.url("/"), MaxQueue: 256 << 10})
	r := newRecorder(1)
	c := open(t, e, r)
	buf := make([]byte, size)
	sent := 0
	for ; sent < 100000; sent++ {
		binary.BigEndian.PutUint64(buf, uint64(sent))
		err := c.Send(ws.OpBinary, buf)
		if errors.Is(err, ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatalf("Send %d: %v", sent, err)
		}
	}
	c.mu.Lock()
	queued, armed := len(c.wq), c.wantWrite
	c.mu.Unlock()
	if sent == 100000 || queued+size <= 256<<10 || !armed {
		t.Fatalf("after %d sends: %d bytes queued, write armed %v; want a full queue", sent, queued, armed)
	}
	t.Logf("%d messages sent before the queue filled, %d bytes queued", sent, queued)
	close(release)
	// The end marker may itself have to wait for room.
	eventually(t, "room for the end marker", func() bool {
		err := c.Send(ws.OpText, []byte("end"))
		if err != nil && !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Send end: %v", err)
		}
		return err == nil
	})
	if n := recv(t, received, "server count"); n != sent {
		t.Fatalf("server got %d messages, %d were sent", n, sent)
	}
	if m := recv(t, r.msgs, "reply"); string(m.p) != "got "+strconv.Itoa(sent) {
		t.Fatalf("reply %q", m.p)
	}
	c.mu.Lock()
	queued, armed = len(c.wq), c.wantWrite
	c.mu.Unlock()
	if queued != 0 || armed {
		t.Errorf("after the drain: %d bytes queued, write armed %v", queued, armed)
	}
}

// engineGoroutines counts the goroutines now running engine code: the
// poller's loop, the pool's workers and the wheel.
func engineGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("shoal/netpoll.")) || bytes.Contains(g, []byte("easygo/netpoll.")) {
			count++
		}
	}
	return count
}

func TestManyConnections(t *testing.T) {
	const n = 500
	var unmasked atomic.Int64
	srv := startServer(t, echoServe(&unmasked))
	srcs, err := ParseSources("127.0.0.2-127.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, Config{URL: srv.url("/"), Sources: srcs, Workers: 8})
	r := newRecorder(n)
	r.onOpen = func(c *Conn) {
		var p [8]byte
		binary.BigEndian.PutUint64(p[:], uint64(c.Index()))
		if err := c.Send(ws.OpBinary, p[:]); err != nil {
			t.Errorf("Send on %d: %v", c.Index(), err)
		}
	}
	// One connection first, so that everything the engine starts lazily is
	// started before the baseline.
	first := dial(t, e, r, 0)
	recv(t, r.opens, "Open")
	recv(t, r.msgs, "echo")
	baseTotal := runtime.NumGoroutine() - int(srv.live.Load())
	baseEngine := engineGoroutines()

	conns := []*Conn{first}
	for i := 1; i < n; i++ {
		conns = append(conns, dial(t, e, r, i))
	}
	seen := make([]bool, n)
	for range n - 1 {
		m := recv(t, r.msgs, "echo")
		idx := int(binary.BigEndian.Uint64(m.p))
		if idx != m.c.Index() || seen[idx] {
			t.Fatalf("echo %d on connection %d (seen %v)", idx, m.c.Index(), seen[idx])
		}
		seen[idx] = true
	}
	if e.Open() != n {
		t.Fatalf("Open() = %d, want %d", e.Open(), n)
	}
	eventually(t, "server handlers running", func() bool { return srv.live.Load() == n })
	// The engine's goroutines do not grow with its connections: the total
	// less the test server's one per connection stays near the baseline.
	if got := engineGoroutines(); got > baseEngine+2 {
		t.Errorf("engine goroutines %d with %d connections, %d with one", got, n, baseEngine)
	}
	if got := runtime.NumGoroutine() - int(srv.live.Load()); got > baseTotal+5 {
		t.Errorf("%d goroutines besides the server's with %d connections, %d with one", got, n, baseTotal)
	}
	for _, c := range conns {
		c.Close()
	}
	for range n {
		if end := recv(t, r.closes, "Closed"); end.err != nil {
			t.Fatalf("Closed with %v after Close", end.err)
		}
	}
	if e.Open() != 0 || unmasked.Load() != 0 {
		t.Fatalf("Open() = %d, unmasked frames %d", e.Open(), unmasked.Load())
	}
	eventually(t, "server connections gone", func() bool { return srv.live.Load() == 0 })
}

func TestEngineClose(t *testing.T) {
	var unmasked atomic.Int64
	srv := startServer(t, echoServe(&unmasked))
	e, err := New(Config{URL: srv.url("/")})
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder(3)
	for i := range 3 {
		dial(t, e, r, i)
		recv(t, r.opens, "Open")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		end := recv(t, r.closes, "Closed")
		if end.err == nil || !errors.Is(end.err, ErrClosed) {
			t.Errorf("Closed with %v, want ErrClosed", end.err)
		}
	}
	if _, err := e.Dial(r, 9); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Close: %v, want ErrClosed", err)
	}
	eventually(t, "server connections gone", func() bool { return srv.live.Load() == 0 })
}
