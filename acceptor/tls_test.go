package acceptor

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/acceptor/tlstest"
)

func tlsHarness(t *testing.T, mod func(*Config)) (*harness, *tlstest.CA) {
	t.Helper()
	ca := tlstest.NewCA(t, "acceptor test CA")
	leaf := ca.Issue(t, t.TempDir(), "server", "127.0.0.1")
	keys, err := LoadKeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) {
		c.TLS = ServerTLSConfig(keys)
		if mod != nil {
			mod(c)
		}
	})
	return h, ca
}

// The upgrade happens over TLS, and the connection is handed over with
// its TLS layer, ready to be fed from the socket.
func TestTLSUpgrade(t *testing.T) {
	h, ca := tlsHarness(t, nil)
	c, err := tls.Dial("tcp", h.addr, ca.ClientConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, wsRequest("/ws/echo")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %s", resp.Status)
	}
	var u Upgraded
	select {
	case u = <-h.upgraded:
	case <-time.After(10 * time.Second):
		t.Fatal("not upgraded")
	}
	if u.TLS == nil || u.TLS.State().Version < tls.VersionTLS12 {
		t.Fatalf("upgraded connection has no TLS layer: %+v", u)
	}
	// What the client sends now arrives as ciphertext on the fd, and
	// decrypts through the handed-over layer.
	if _, err := io.WriteString(c, "after the upgrade"); err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, 4096)
	fds := []unix.PollFd{{Fd: int32(u.Fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10000); n != 1 || err != nil {
		t.Fatalf("poll: %d, %v", n, err)
	}
	n, err := unix.Read(u.Fd, ct)
	if err != nil {
		t.Fatal(err)
	}
	u.TLS.Feed(ct[:n])
	plain := make([]byte, 4096)
	got := 0
	for {
		m, err := u.TLS.Read(plain[got:])
		got += m
		if err == ErrWantRead {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(plain[:got]) != "after the upgrade" {
		t.Fatalf("decrypted %q", plain[:got])
	}
	sealed, err := u.TLS.Seal(nil, []byte("answer"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFull(u.Fd, sealed); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(c, buf[:6]); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
}

// Handshakes in flight are bounded; past the bound a connection is
// closed and counted, and Close stops the parked ones.
func TestTLSHandshakeLimit(t *testing.T) {
	h, _ := tlsHarness(t, func(c *Config) { c.MaxTLSHandshakes = 1 })
	before := runtime.NumGoroutine()
	parked := h.dial()
	// A record header promising more: the handshake waits for the rest.
	if _, err := parked.Write([]byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.a.tlsActive.Load() == 1 })
	second := h.dial()
	if _, err := second.Write([]byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01}); err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := second.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("connection past the limit: read %d, %v; want EOF", n, err)
	}
	waitFor(t, func() bool { return h.rejections("tls_busy") == 1 })

	h.a.Close()
	if n := h.a.tlsActive.Load(); n != 0 {
		t.Fatalf("%d handshakes still running after Close", n)
	}
	parked.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := parked.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("parked handshake after Close: read %d, %v; want EOF", n, err)
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// A full worker's 503 with Retry-After reaches a TLS client as an answer
// it can read, through TLS, and is counted like a plain one.
func TestTLSMaxConns(t *testing.T) {
	h, ca := tlsHarness(t, func(c *Config) { c.MaxConns = 1 })
	roundTrip := func() *http.Response {
		c, err := tls.Dial("tcp", h.addr, ca.ClientConfig("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, wsRequest("/ws/echo")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := roundTrip(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first handshake: %s", resp.Status)
	}
	u := <-h.upgraded
	resp := roundTrip()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("second handshake: %s, Retry-After %q; want 503 with Retry-After 5", resp.Status, resp.Header.Get("Retry-After"))
	}
	waitFor(t, func() bool { return h.rejections("max_conns") == 1 })
	h.release(u)
	if resp := roundTrip(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake after a release: %s", resp.Status)
	}
	h.release(<-h.upgraded)
}
