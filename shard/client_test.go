package shard

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/wire"
)

// testClient is a deliberately low-level WebSocket client: it can send
// frames a well-behaved library would refuse to build, which is what the
// protocol tests need.
type testClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialWS(t testing.TB, addr, target string) *testClient {
	t.Helper()
	return dialWSWith(t, &net.Dialer{}, addr, target)
}

// dialWSWith is dialWS through d, for sockets with options of their own.
func dialWSWith(t testing.TB, d *net.Dialer, addr, target string) *testClient {
	t.Helper()
	tc, _ := dialWSHeaders(t, d, addr, target)
	return tc
}

// dialWSHeaders dials through d with extra request header lines ("Name:
// value") and returns the handshake's response too.
func dialWSHeaders(t testing.TB, d *net.Dialer, addr, target string, headers ...string) (*testClient, *http.Response) {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake to %s: %s", target, resp.Status)
	}
	return &testClient{t: t, c: c, br: br}, resp
}

var testMask = [4]byte{0x12, 0x34, 0x56, 0x78}

// send writes one masked frame.
func (tc *testClient) send(op ws.OpCode, fin bool, p []byte) {
	tc.t.Helper()
	tc.raw(wire.AppendMaskedFrame(nil, op, fin, testMask, p))
}

func (tc *testClient) raw(b []byte) {
	tc.t.Helper()
	if _, err := tc.c.Write(b); err != nil {
		tc.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame from the server, which must be unmasked.
func (tc *testClient) read() (ws.Header, []byte) {
	tc.t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(tc.br)
	if err != nil {
		tc.t.Fatalf("read header: %v", err)
	}
	if h.Masked {
		tc.t.Fatal("server sent a masked frame")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(tc.br, p); err != nil {
		tc.t.Fatalf("read payload: %v", err)
	}
	return h, p
}

// readMessage skips pings and returns the next data frame.
func (tc *testClient) readMessage() (ws.OpCode, []byte) {
	tc.t.Helper()
	for {
		h, p := tc.read()
		switch h.OpCode {
		case ws.OpPing, ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := wire.ParseClose(p)
			tc.t.Fatalf("closed by server: %d %s", code, reason)
		}
		return h.OpCode, p
	}
}

// expectClose reads until a close frame and checks its code, then checks
// that the server ends the TCP connection.
func (tc *testClient) expectClose(want ws.StatusCode) string {
	tc.t.Helper()
	for {
		h, p := tc.read()
		if h.OpCode != ws.OpClose {
			continue
		}
		code, reason := wire.ParseClose(p)
		if code != want {
			tc.t.Fatalf("close code %d (%q), want %d", code, reason, want)
		}
		// Answer like a polite client, then the server must hang up.
		tc.c.Write(wire.AppendMaskedClose(nil, testMask, code, ""))
		tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, tc.br); err != nil {
			tc.t.Fatalf("after close: %v", err)
		}
		return string(reason)
	}
}

func closePayload(code uint16, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	return append(b, reason...)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func bigText(n int) []byte { return []byte(strings.Repeat("x", n)) }

var _ = fmt.Sprint

func wireMasked(op ws.OpCode, p []byte) []byte {
	return wire.AppendMaskedFrame(nil, op, true, testMask, p)
}
