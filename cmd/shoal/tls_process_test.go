package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/acceptor/tlstest"
)

// dialTLS opens a wss:// client that trusts only ca, and returns it with
// the serial number of the certificate the server presented.
func dialTLS(t *testing.T, url string, ca *tlstest.CA) (*client, *big.Int) {
	t.Helper()
	c := dialWith(t, url, ws.Dialer{TLSConfig: ca.ClientConfig("127.0.0.1")})
	return c, c.c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

// TestServeTLS runs shoal serve with a certificate of a CA made in the
// test: wss:// through both workers, a certificate renewal that drops no
// connection (SIGUSR1), a rolling restart (SIGHUP) whose old clients hear
// 1012 and whose new workers serve the renewed certificate, and a plain
// client refused and counted.
func TestServeTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ca := tlstest.NewCA(t, "serve test CA")
	dir := t.TempDir()
	first := ca.Issue(t, dir, "server", "127.0.0.1")
	f := startServe(t, "--workers", "2", "--services", "echo", "--drain-timeout", "5s",
		"--tls-cert", first.CertFile, "--tls-key", first.KeyFile)
	if !strings.HasPrefix(f.ws, "wss://") {
		t.Fatalf("serve announced %s, want wss://", f.ws)
	}
	url := f.ws + "/ws/echo"

	const n = 20
	old := make([]*client, n)
	for i := range old {
		c, serial := dialTLS(t, url, ca)
		if serial.Cmp(first.Cert.SerialNumber) != 0 {
			t.Fatalf("client %d: serial %v, want %v", i, serial, first.Cert.SerialNumber)
		}
		if err := c.echo(ws.OpText, []byte("hello over TLS")); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		old[i] = c
	}
	workers := f.workers()

	// Renewal: new files, SIGUSR1. Every new handshake gets the new
	// certificate, and every connection already open stays.
	renewed := ca.Issue(t, dir, "server", "127.0.0.1")
	if err := f.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "both workers to present the renewed certificate", func() bool {
		for range 10 {
			c, serial := dialTLS(t, url, ca)
			c.c.Close()
			if serial.Cmp(renewed.Cert.SerialNumber) != 0 {
				return false
			}
		}
		return true
	})
	for i, c := range old {
		if err := c.echo(ws.OpBinary, []byte{byte(i)}); err != nil {
			t.Fatalf("client %d after the reload: %v", i, err)
		}
	}
	for pid := range f.workers() {
		if _, ok := workers[pid]; !ok {
			t.Fatalf("worker %d is new: a reload must not restart workers", pid)
		}
	}

	// A plain client on the TLS port is refused with a readable answer.
	plain, err := net.Dial("tcp", strings.TrimPrefix(f.ws, "wss://"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	io.WriteString(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(plain), nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain HTTP to the TLS port: %v %v", resp, err)
	}
	waitUntil(t, "the refusal in /metrics", func() bool {
		return f.metricSum(`shoal_handshakes_rejected_total{reason="not_tls"`) == 1
	})

	// Rolling restart: each old client hears 1012 in its turn, new
	// workers take over with the renewed certificate.
	if err := f.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i, c := range old {
		c.c.SetDeadline(time.Now().Add(60 * time.Second))
		if code, err := closeCode(c.rw); err != nil || code != 1012 {
			t.Fatalf("client %d during the rolling restart: close %d, %v; want 1012", i, code, err)
		}
	}
	waitUntil(t, "two new workers", func() bool {
		ws := f.workers()
		for pid := range ws {
			if _, ok := workers[pid]; ok {
				return false
			}
		}
		return len(ws) == 2
	})
	for i := range 10 {
		c, serial := dialTLS(t, url, ca)
		if serial.Cmp(renewed.Cert.SerialNumber) != 0 {
			t.Fatalf("after the restart, client %d got serial %v", i, serial)
		}
		if err := c.echo(ws.OpText, []byte("new worker")); err != nil {
			t.Fatalf("after the restart, client %d: %v", i, err)
		}
	}

	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	f.waitExit()
}

// closeCode reads frames up to a close frame and returns its code. It
// reads frames itself: gobwas/ws's client helpers know only RFC 6455's
// codes and take 1012 (service restart, from the IANA registry) for a
// protocol error.
func closeCode(r io.Reader) (int, error) {
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return 0, err
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			return 0, err
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		if len(p) < 2 {
			return 0, errors.New("close frame without a code")
		}
		return int(p[0])<<8 | int(p[1]), nil
	}
}
