package acceptor

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// TLS on the WebSocket port works without a goroutine per idle connection:
// crypto/tls runs over transport, an in-memory net.Conn. Once the handshake
// is done, the connection's owner reads ciphertext from the raw socket when
// epoll says it is readable, hands it to [TLSConn.Feed], and decrypts with
// [TLSConn.Read] until it reports ErrWantRead. crypto/tls keeps its state
// across that error, because the transport reports it as a temporary
// net.Error (a timeout), which crypto/tls treats as "try again" (see
// readRecordOrCCS in crypto/tls/conn.go). Outgoing frames are encrypted by
// [TLSConn.Seal] into bytes the owner queues like any other frame, so the
// outbound queue and its limit hold for TLS connections too.
//
// The handshake itself cannot be resumed that way: crypto/tls remembers
// any error returned during the handshake, temporary or not. So a
// handshake runs on a goroutine of its own, started once the client's
// first bytes arrived, which parks on a channel (not on the socket) while
// it waits for readiness from the poller, and ends with the handshake. The
// number of handshakes in flight is bounded (Config.MaxTLSHandshakes) and
// each is bounded in time by the handshake deadline.

// ErrWantRead is returned by [TLSConn.Read] once every byte given to Feed
// has been decrypted: the connection needs more input from its socket.
var ErrWantRead = errors.New("acceptor: TLS needs more input")

// errDrained is what the transport returns when it has no more input for
// crypto/tls. It must be a temporary net.Error so that crypto/tls does not
// make it the connection's permanent error.
var errDrained net.Error = drainedError{}

type drainedError struct{}

func (drainedError) Error() string   { return "acceptor: TLS transport drained" }
func (drainedError) Timeout() bool   { return true }
func (drainedError) Temporary() bool { return true }

// errAborted ends a handshake whose deadline passed or whose acceptor closed.
var errAborted = errors.New("acceptor: TLS handshake aborted")

// Modes of a transport.
const (
	// modeBlocking: the handshake goroutine reads and writes the socket,
	// parking on the poller when it would block.
	modeBlocking uint8 = iota
	// modeFed: reads come from Feed, writes collect in out.
	modeFed
	// modeHandoff: a plain HTTP request took the connection to net/http;
	// everything goes through nc.
	modeHandoff
)

// transport is the net.Conn under a crypto/tls.Conn.
type transport struct {
	fd   int
	mode uint8
	in   []byte // ciphertext not yet taken by crypto/tls
	out  []byte // ciphertext produced in modeFed
	wait func() error
	nc   net.Conn
	// The addresses are kept compact: crypto/tls only passes the
	// net.Addr forms on, to a GetCertificate that asks for them.
	local, remote netip.AddrPort
}

func (t *transport) Read(p []byte) (int, error) {
	if len(t.in) > 0 {
		n := copy(p, t.in)
		t.in = t.in[n:]
		if len(t.in) == 0 {
			t.in = nil
		}
		return n, nil
	}
	switch t.mode {
	case modeFed:
		return 0, errDrained
	case modeHandoff:
		return t.nc.Read(p)
	}
	for {
		n, err := unix.Read(t.fd, p)
		switch {
		case n > 0:
			return n, nil
		case n == 0 && err == nil:
			return 0, io.EOF
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			if err := t.wait(); err != nil {
				return 0, err
			}
		default:
			return 0, err
		}
	}
}

func (t *transport) Write(p []byte) (int, error) {
	switch t.mode {
	case modeFed:
		t.out = append(t.out, p...)
		return len(p), nil
	case modeHandoff:
		return t.nc.Write(p)
	}
	if err := writeFull(t.fd, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close does nothing but in modeHandoff: the fd belongs to the
// connection's owner, who closes it.
func (t *transport) Close() error {
	if t.mode == modeHandoff {
		return t.nc.Close()
	}
	return nil
}

func (t *transport) LocalAddr() net.Addr  { return net.TCPAddrFromAddrPort(t.local) }
func (t *transport) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(t.remote) }

// Deadlines matter only to net/http after a handoff; crypto/tls sets one
// around close_notify, which never blocks here.
func (t *transport) SetDeadline(d time.Time) error {
	if t.mode == modeHandoff {
		return t.nc.SetDeadline(d)
	}
	return nil
}

func (t *transport) SetReadDeadline(d time.Time) error {
	if t.mode == modeHandoff {
		return t.nc.SetReadDeadline(d)
	}
	return nil
}

func (t *transport) SetWriteDeadline(d time.Time) error {
	if t.mode == modeHandoff {
		return t.nc.SetWriteDeadline(d)
	}
	return nil
}

// TLSConn is the TLS layer of an upgraded connection, driven by its owner
// without a goroutine: Feed and Read on the way in, Seal on the way out.
// It is not safe for concurrent use; the owner serialises every call,
// reads and writes alike, since a read may produce output (an alert, a key
// update) that must be ordered with the frames the writes produce.
type TLSConn struct {
	tc *tls.Conn
	t  transport
}

// Feed hands over ciphertext read from the socket; Read decrypts it. The
// bytes are used in place until Read reports ErrWantRead (or fails), so p
// must stay untouched until then.
func (c *TLSConn) Feed(p []byte) { c.t.in = p }

// Read decrypts into p what was fed. It returns ErrWantRead once every fed
// byte was consumed (a record split across reads waits, inside crypto/tls,
// for the rest), io.EOF when the peer sent close_notify, or the TLS error
// that ends the connection. Output it produced waits in [TLSConn.Output].
func (c *TLSConn) Read(p []byte) (int, error) {
	n, err := c.tc.Read(p)
	if errors.Is(err, errDrained) {
		return n, ErrWantRead
	}
	if err != nil {
		c.t.in = nil
	}
	return n, err
}

// Seal appends to dst the records that carry p, ready to be written to
// the socket. dst should have room for SealedLen(len(p)) bytes; it grows
// otherwise.
func (c *TLSConn) Seal(dst, p []byte) ([]byte, error) {
	c.t.out = dst
	_, err := c.tc.Write(p)
	return c.Output(), err
}

// SealedLen is an upper bound on the bytes Seal produces for n bytes:
// records carry at most 29 bytes of overhead (TLS 1.2 with AES-GCM), and
// crypto/tls starts a connection with records of about one TCP segment
// (dynamic record sizing) before it moves to 16 KiB ones.
func SealedLen(n int) int { return n + 29*(n/1024+1) }

// CloseNotify returns the close_notify alert that ends the sending side,
// or nil when it was already produced.
func (c *TLSConn) CloseNotify() []byte {
	_ = c.tc.CloseWrite()
	return c.Output()
}

// Output takes the ciphertext that Read or CloseNotify produced, if any.
func (c *TLSConn) Output() []byte {
	out := c.t.out
	c.t.out = nil
	return out
}

// State reports the negotiated TLS parameters.
func (c *TLSConn) State() tls.ConnectionState { return c.tc.ConnectionState() }

// KeyPair is a certificate and its private key, read from PEM files and
// read again by Reload. Handshakes take the current pair through
// GetCertificate, so a reload changes what new handshakes see and leaves
// established connections alone.
type KeyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadKeyPair reads a PEM certificate chain and its key.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload reads the files again. On error the pair in use stays.
func (k *KeyPair) Reload() error {
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("acceptor: TLS key pair %s, %s: %w", k.certFile, k.keyFile, err)
	}
	k.cur.Store(&cert)
	return nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.cur.Load(), nil
}

// ServerTLSConfig is the configuration the gateway serves TLS with: the
// key pair's current certificate, TLS 1.2 or later, HTTP/1.1 announced by
// ALPN (a WebSocket handshake is an HTTP/1.1 request).
func ServerTLSConfig(k *KeyPair) *tls.Config {
	return &tls.Config{
		GetCertificate: k.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
	}
}
