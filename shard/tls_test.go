package shard

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/acceptor/tlstest"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// tlsShard is a shard on a TLS port with a certificate from a CA made for
// the test, and the echo service.
type tlsShard struct {
	*harness
	ca   *tlstest.CA
	keys *acceptor.KeyPair
	leaf *tlstest.Leaf
	dir  string
}

func startTLSShard(t *testing.T, mod func(*Config)) *tlsShard {
	t.Helper()
	ts := &tlsShard{ca: tlstest.NewCA(t, "shoal test CA"), dir: t.TempDir()}
	ts.leaf = ts.ca.Issue(t, ts.dir, "server", "127.0.0.1", "localhost")
	keys, err := acceptor.LoadKeyPair(ts.leaf.CertFile, ts.leaf.KeyFile)
	must(t, err)
	ts.keys = keys
	ts.harness = startShard(t, func(c *Config) {
		c.TLS = acceptor.ServerTLSConfig(keys)
		if mod != nil {
			mod(c)
		}
	})
	ts.echoService()
	return ts
}

// wssClient is a real TLS WebSocket client: crypto/tls under gobwas/ws's
// dialer.
type wssClient struct {
	t     *testing.T
	conn  net.Conn
	rw    io.ReadWriter
	state tls.ConnectionState
}

func (ts *tlsShard) dial(t *testing.T) *wssClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := ts.ca.ClientConfig("127.0.0.1")
	cfg.NextProtos = []string{"http/1.1"} // as browsers offer for wss://
	d := ws.Dialer{TLSConfig: cfg}
	c, br, _, err := d.Dial(ctx, "wss://"+ts.addr+"/ws/echo")
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	wc := &wssClient{t: t, conn: c, rw: struct {
		io.Reader
		io.Writer
	}{r, c}}
	if tc, ok := c.(*tls.Conn); ok {
		wc.state = tc.ConnectionState()
	} else {
		t.Fatalf("dialer returned %T, want *tls.Conn", c)
	}
	return wc
}

func (wc *wssClient) echo(op ws.OpCode, msg []byte) error {
	wc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wsutil.WriteClientMessage(wc.conn, op, msg); err != nil {
		return err
	}
	got, gop, err := wsutil.ReadServerData(wc.rw)
	if err != nil {
		return err
	}
	if gop != op || !bytes.Equal(got, msg) {
		return fmt.Errorf("echo of %v, %d bytes, came back as %v, %d bytes", op, len(msg), gop, len(got))
	}
	return nil
}

func TestTLSEcho(t *testing.T) {
	ts := startTLSShard(t, nil)
	wc := ts.dial(t)
	if wc.state.Version < tls.VersionTLS12 || wc.state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("TLS version %x, ALPN %q", wc.state.Version, wc.state.NegotiatedProtocol)
	}
	if got := wc.state.PeerCertificates[0].SerialNumber; got.Cmp(ts.leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("server certificate serial %v, want %v", got, ts.leaf.Cert.SerialNumber)
	}
	for _, m := range []struct {
		op ws.OpCode
		p  []byte
	}{
		{ws.OpText, []byte("héllo over TLS")},
		{ws.OpBinary, []byte{0, 1, 2, 0xff}},
		// Larger than one TLS record and than half the read buffer.
		{ws.OpText, bigText(300 << 10)},
		{ws.OpText, nil},
	} {
		if err := wc.echo(m.op, m.p); err != nil {
			t.Fatalf("echo of %d bytes: %v", len(m.p), err)
		}
	}
	// A ping is answered through TLS too.
	wc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	must(t, wsutil.WriteClientMessage(wc.conn, ws.OpPing, []byte("p")))
	hd, err := ws.ReadHeader(wc.rw)
	must(t, err)
	if hd.OpCode != ws.OpPong {
		t.Fatalf("got %v, want a pong", hd.OpCode)
	}
	p := make([]byte, hd.Length)
	_, err = io.ReadFull(wc.rw, p)
	must(t, err)

	// The close handshake completes, and the server ends TLS with
	// close_notify: the client reads EOF, not a broken record.
	must(t, wsutil.WriteClientMessage(wc.conn, ws.OpClose, closePayload(1000, "bye")))
	_, _, err = wsutil.ReadServerData(wc.rw)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("close: %v, want the close echo 1000", err)
	}
	if _, err := wc.rw.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the close: %v, want EOF", err)
	}
	if code := ts.event("close").Header.Get("Shoal-Close-Code"); code != "1000" {
		t.Fatalf("close event code %q", code)
	}
	waitFor(t, "empty table", func() bool { return ts.s.Conns() == 0 })
}

// Frames a client sends right behind its request may reach the server in
// the same read as the request: TLS then holds them after the head has
// been taken, and they must be read without waiting for a readiness event
// that never comes.
func TestTLSFramesBehindRequest(t *testing.T) {
	ts := startTLSShard(t, nil)
	tcp, err := net.Dial("tcp", ts.addr)
	must(t, err)
	t.Cleanup(func() { tcp.Close() })
	hc := &holdConn{Conn: tcp}
	raw := tls.Client(hc, ts.ca.ClientConfig("127.0.0.1"))
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	must(t, raw.Handshake())
	// Three records, the request and two frames, in one TCP segment.
	hc.hold = true
	req := "GET /ws/echo HTTP/1.1\r\nHost: " + ts.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	for _, rec := range [][]byte{[]byte(req), wireMasked(ws.OpText, []byte("one")), wireMasked(ws.OpText, []byte("two"))} {
		_, err = raw.Write(rec)
		must(t, err)
	}
	must(t, hc.flush())
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	must(t, err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	rw := struct {
		io.Reader
		io.Writer
	}{br, raw}
	for _, want := range []string{"one", "two"} {
		got, op, err := wsutil.ReadServerData(rw)
		if err != nil {
			t.Fatalf("waiting for the echo of %q: %v", want, err)
		}
		if op != ws.OpText || string(got) != want {
			t.Fatalf("echo %v %q, want %q", op, got, want)
		}
	}
}

// holdConn gathers writes while hold is set, until flush sends them as one.
type holdConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) flush() error {
	h.hold = false
	_, err := h.Conn.Write(h.buf)
	h.buf = nil
	return err
}

// A certificate reload changes what new handshakes see and leaves the
// connections already open alone.
func TestTLSReload(t *testing.T) {
	ts := startTLSShard(t, nil)
	old := ts.dial(t)
	must(t, old.echo(ws.OpText, []byte("before")))

	renewed := ts.ca.Issue(t, ts.dir, "server", "127.0.0.1")
	must(t, ts.keys.Reload())

	if err := old.echo(ws.OpText, []byte("after the reload")); err != nil {
		t.Fatalf("connection opened before the reload: %v", err)
	}
	if got := old.state.PeerCertificates[0].SerialNumber; got.Cmp(ts.leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("old connection's certificate changed")
	}
	fresh := ts.dial(t)
	if got := fresh.state.PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("new handshake got serial %v, want the renewed %v", got, renewed.Cert.SerialNumber)
	}
	must(t, fresh.echo(ws.OpText, []byte("new cert")))
	if ts.s.Conns() != 2 {
		t.Fatalf("shard holds %d connections, want 2", ts.s.Conns())
	}

	// A broken file keeps the pair in use.
	must(t, os.WriteFile(ts.leaf.CertFile, []byte("not a certificate"), 0o600))
	if err := ts.keys.Reload(); err == nil {
		t.Fatal("reload of a broken certificate succeeded")
	}
	if got := ts.dial(t).state.PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("after a failed reload the server presents serial %v", got)
	}
}

// A client that opens TCP and never finishes its TLS handshake is cut
// off by the handshake deadline and counted.
func TestTLSHandshakeTimeout(t *testing.T) {
	ts := startTLSShard(t, func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
	for _, first := range [][]byte{
		nil, // nothing at all
		// The header of a TLS handshake record, then silence: the
		// handshake goroutine is parked waiting for the rest.
		{0x16, 0x03, 0x01, 0x02, 0x00, 0x01},
	} {
		c, err := net.Dial("tcp", ts.addr)
		must(t, err)
		defer c.Close()
		if first != nil {
			_, err = c.Write(first)
			must(t, err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 64))
		if n != 0 || !isClosed(err) {
			t.Fatalf("after %x: read %d bytes, %v; want the connection closed", first, n, err)
		}
	}
	waitFor(t, "2 timeouts counted", func() bool { return ts.s.Stats().Rejected["timeout"] == 2 })
	if ts.s.acc.Pending() != 0 {
		t.Fatalf("%d handshakes pending", ts.s.acc.Pending())
	}
}

// isClosed reports whether a read error means the server closed the
// connection (EOF, or a reset when it closed with bytes unread).
func isClosed(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// A client speaking plain HTTP or plain WebSocket to the TLS port gets a
// readable refusal, is closed, and is counted, as is a TLS client whose
// handshake fails; the shard carries on.
func TestTLSPortRefusesBadClients(t *testing.T) {
	ts := startTLSShard(t, nil)
	c, err := net.Dial("tcp", ts.addr)
	must(t, err)
	defer c.Close()
	req := "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_, err = io.WriteString(c, req)
	must(t, err)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "TLS") {
		t.Fatalf("plaintext request: %s %q", resp.Status, body)
	}
	// A byte stream that is neither TLS nor HTTP is closed without a word.
	g, err := net.Dial("tcp", ts.addr)
	must(t, err)
	defer g.Close()
	_, err = g.Write([]byte{0x00, 0x01, 0x02})
	must(t, err)
	g.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := g.Read(make([]byte, 16)); n != 0 || !isClosed(err) {
		t.Fatalf("garbage: read %d, %v", n, err)
	}
	waitFor(t, "refusals counted", func() bool { return ts.s.Stats().Rejected["not_tls"] == 2 })

	// A TLS client the server cannot agree with (TLS 1.1 only) is refused
	// by crypto/tls with an alert, and counted.
	old := ts.ca.ClientConfig("127.0.0.1")
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.Dial("tcp", ts.addr, old); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	} else if !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.1 client: %v, want a protocol version alert", err)
	}
	waitFor(t, "the failed handshake counted", func() bool { return ts.s.Stats().Rejected["tls_handshake"] == 1 })
	must(t, ts.dial(t).echo(ws.OpText, []byte("still serving")))
}

// Plain HTTP on the TLS port is HTTPS.
func TestTLSHealthz(t *testing.T) {
	ts := startTLSShard(t, nil)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ts.ca.ClientConfig("127.0.0.1")}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + ts.addr + "/healthz")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok t1\n" {
		t.Fatalf("healthz over TLS: %s %q", resp.Status, body)
	}
}

// Idle TLS connections hold no goroutine: the handshake's goroutine ends
// with the handshake.
func TestTLSIdleConnsHoldNoGoroutine(t *testing.T) {
	ts := startTLSShard(t, nil)
	// One connection first, so that lazily started goroutines (the HTTP
	// server's, the client's) are counted before the baseline.
	must(t, ts.dial(t).echo(ws.OpText, []byte("warm")))
	before := runtime.NumGoroutine()
	const n = 40
	for i := range n {
		if err := ts.dial(t).echo(ws.OpText, []byte("x")); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	waitFor(t, "handshakes done", func() bool { return ts.s.acc.Pending() == 0 })
	// Goroutines may still be on their way out; allow a few, not one each.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine()-before >= n/4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before %d idle TLS connections, %d after", before, n, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Both TLS versions the gateway accepts carry WebSocket traffic.
func TestTLS12(t *testing.T) {
	ts := startTLSShard(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := ts.ca.ClientConfig("127.0.0.1")
	cfg.MaxVersion = tls.VersionTLS12
	c, _, _, err := ws.Dialer{TLSConfig: cfg}.Dial(ctx, "wss://"+ts.addr+"/ws/echo")
	must(t, err)
	defer c.Close()
	if v := c.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS12 {
		t.Fatalf("version %x, want TLS 1.2", v)
	}
	wc := &wssClient{t: t, conn: c, rw: c}
	for _, n := range []int{5, 20 << 10} {
		must(t, wc.echo(ws.OpBinary, bytes.Repeat([]byte{7}, n)))
	}
}

// A TLS client that stops reading is closed with 1008 like any other, and
// its stream stays whole: the records sealed before the close frame are
// still delivered (the frames not yet sealed are dropped, as for a plain
// client), so once it reads again it decrypts all of them and then the
// close.
func TestTLSSlowConsumer(t *testing.T) {
	ts := startTLSShard(t, func(c *Config) { c.MaxQueue = 256 << 10; c.CloseTimeout = time.Minute })
	wc := ts.dial(t)
	cid := ts.event("open").Header.Get("Shoal-Conn")
	if e := ts.command(cid, "join", map[string]string{"Shoal-Room": "firehose"}, nil); e != "" {
		t.Fatal(e)
	}
	payload := bigText(32 << 10)
	sent := 0
	deadline := time.Now().Add(30 * time.Second)
	for ts.s.stats.serverCloses[closeSlow].Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no slow-client close after %d messages", sent)
		}
		must(t, ts.nc.Publish(ts.subj.Room("firehose"), payload))
		sent++
		if sent%16 == 0 {
			must(t, ts.nc.Flush())
		}
	}
	wc.conn.SetDeadline(time.Now().Add(30 * time.Second))
	got := 0
	for {
		p, op, err := wsutil.ReadServerData(wc.rw)
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			if ce.Code != ws.StatusPolicyViolation {
				t.Fatalf("close %d, want 1008", ce.Code)
			}
			break
		}
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", got, sent, err)
		}
		if op != ws.OpText || len(p) != len(payload) {
			t.Fatalf("message %d: %v of %d bytes", got, op, len(p))
		}
		got++
	}
	if got == 0 || got >= sent {
		t.Fatalf("received %d of %d messages before the close", got, sent)
	}
	if code := ts.event(bus.EventClose).Header.Get(bus.HeaderCloseCode); code != "1008" {
		t.Fatalf("close event with code %q, want 1008", code)
	}
	if st := ts.s.Stats(); st.ServerCloses["slow_consumer"] != 1 {
		t.Fatalf("server closes %v", st.ServerCloses)
	}
}

// drop-oldest over TLS: frames are sealed only when they are written, so
// the ones dropped never took a sequence number, and a client that did
// not read keeps its connection and a stream its TLS accepts. When it
// reads again it gets whole messages, in order, ending with the newest,
// and the service heard how many were dropped.
func TestTLSDropOldest(t *testing.T) {
	ts := startTLSShard(t, func(c *Config) {
		c.MaxQueue = 64 << 10
		c.SlowPolicy = SlowDropOldest
	})
	wc := ts.dial(t)
	cid := ts.event(bus.EventOpen).Header.Get(bus.HeaderConn)
	if e := ts.command(cid, bus.CmdJoin, map[string]string{bus.HeaderRoom: "prices"}, nil); e != "" {
		t.Fatal(e)
	}
	size := ts.publishRising("prices")
	wc.conn.SetDeadline(time.Now().Add(30 * time.Second))
	received := readRising(t, size, func() (ws.OpCode, []byte) {
		p, op, err := wsutil.ReadServerData(wc.rw)
		if err != nil {
			t.Fatalf("TLS stream broken: %v", err)
		}
		return op, p
	})
	dropped := risingCount - received
	ts.awaitDropped(cid, dropped)
	st := ts.s.Stats()
	if st.Dropped[bus.DropQueueFull] != uint64(dropped) || st.ServerCloses["slow_consumer"] != 0 {
		t.Fatalf("stats: dropped %v, server closes %v", st.Dropped, st.ServerCloses)
	}
	// Still open, and the stream still decrypts both ways.
	if err := wc.echo(ws.OpText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
}

// permessage-deflate over TLS: a compressed message is decrypted, then
// inflated; the compressed answer is sealed.
func TestTLSWithDeflate(t *testing.T) {
	ts := startTLSShard(t, func(c *Config) { c.Compress = []string{"echo"} })
	raw, err := tls.Dial("tcp", ts.addr, ts.ca.ClientConfig("127.0.0.1"))
	must(t, err)
	t.Cleanup(func() { raw.Close() })
	req := "GET /ws/echo HTTP/1.1\r\nHost: " + ts.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + deflateOffer + "\r\n\r\n"
	_, err = io.WriteString(raw, req)
	must(t, err)
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	must(t, err)
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.HasPrefix(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		t.Fatalf("handshake: %s, extensions %q", resp.Status, resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	tc := &testClient{t: t, c: raw, br: br}
	text := bigText(40 << 10)
	tc.raw(wire.AppendMaskedDeflatedFrame(nil, ws.OpText, testMask, text))
	op, got, compressed := tc.readInflated()
	if op != ws.OpText || !bytes.Equal(got, text) || !compressed {
		t.Fatalf("echo: %v, %d bytes, compressed %v", op, len(got), compressed)
	}
}
