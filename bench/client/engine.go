package client

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/netpoll"
	"github.com/shoal-gw/shoal/wire"
)

// Handler receives the life of the connections of an Engine. Its methods run
// on the engine's pool goroutines, for different connections at once, but
// never concurrently for one connection; they must not block for long.
type Handler interface {
	// Open is called once the server's 101 response has been checked.
	Open(c *Conn)
	// Message is called for each data message; p is valid only until
	// Message returns. now is the time the bytes were read, in unix
	// nanoseconds.
	Message(c *Conn, op ws.OpCode, p []byte, now int64)
	// Closed is called once when the connection ended: err is nil after
	// Conn.Close, a *FailError otherwise (see Cause).
	Closed(c *Conn, err error)
}

// Config configures an Engine. The zero value of each field but URL means
// its default.
type Config struct {
	// URL is the target, ws://host:port/path; host must be an IP address or
	// resolve to one. A comma-separated list names several targets, such
	// as the gateways of a fleet: Dial spreads connections over them by
	// index, DialTarget picks one.
	URL string
	// Sources are the local addresses connections bind to, round robin;
	// empty lets the kernel choose.
	Sources []netip.Addr
	// HandshakeTimeout bounds connect plus handshake; default 10s.
	HandshakeTimeout time.Duration
	// MaxMessage bounds a received message; default wire.DefaultMaxMessage.
	MaxMessage int64
	// MaxQueue bounds the bytes waiting to be written on one connection;
	// default 1 MiB.
	MaxQueue int
	// Workers is the size of the goroutine pool that reads and writes;
	// default netpoll's.
	Workers int
	// Logger receives engine errors; nil discards them.
	Logger *slog.Logger
}

// Engine dials and runs client connections on one epoll instance and a
// bounded goroutine pool.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	poller  *netpoll.Poller
	pool    *netpoll.Pool
	wheel   *netpoll.Wheel
	targets []target
	wireCfg wire.Config
	src     atomic.Uint64
	open    atomic.Int64
	once    sync.Once
	closed  atomic.Bool
}

// target is one address connections are dialed to.
type target struct {
	index   int // among the engine's targets
	addr    netip.AddrPort
	family  int
	host    string // the URL's host[:port], the request's Host
	path    string // the URL's request target, path and query
	reqHead []byte // request up to and excluding the Sec-WebSocket-Key value
}

// sockaddr is a fresh socket address for one connect: x/sys/unix writes
// into a Sockaddr when it passes it to the kernel, so dials on several
// goroutines cannot share one.
func (t *target) sockaddr() unix.Sockaddr {
	if t.family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(t.addr.Port()), Addr: t.addr.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(t.addr.Port()), Addr: t.addr.Addr().As16()}
}

// New parses cfg.URL, resolves its hosts and starts the poller, pool and
// handshake timer wheel.
func New(cfg Config) (*Engine, error) {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, wireCfg: wire.Config{Role: wire.Client, MaxMessage: cfg.MaxMessage}}
	for _, raw := range SplitURLs(cfg.URL) {
		t, err := newTarget(raw, cfg.Sources)
		if err != nil {
			return nil, err
		}
		t.index = len(e.targets)
		e.targets = append(e.targets, t)
	}
	if len(e.targets) == 0 {
		return nil, fmt.Errorf("%w: no URL", ErrBadURL)
	}
	var err error
	e.poller, err = netpoll.NewPoller(cfg.Logger)
	if err != nil {
		return nil, err
	}
	e.pool = netpoll.NewPoolConfig(netpoll.PoolConfig{Workers: cfg.Workers, Logger: cfg.Logger})
	e.wheel = netpoll.NewWheel(10*time.Millisecond, 0)
	e.wheel.Start()
	return e, nil
}

// SplitURLs splits a comma-separated list of URLs, dropping empty items.
func SplitURLs(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// newTarget resolves one ws:// URL whose connections bind to sources.
func newTarget(raw string, sources []netip.Addr) (target, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "ws" || u.Host == "" {
		return target{}, fmt.Errorf("%w: %q (want ws://host:port/path)", ErrBadURL, raw)
	}
	ap, err := ResolveTarget(u)
	if err != nil {
		return target{}, err
	}
	t := target{addr: ap, family: unix.AF_INET6}
	if ap.Addr().Is4() {
		t.family = unix.AF_INET
	}
	for _, s := range sources {
		if s.Is4() != ap.Addr().Is4() {
			return target{}, fmt.Errorf("%w: source %s and target %s differ in family", ErrBadSource, s, ap.Addr())
		}
	}
	t.host, t.path = u.Host, u.RequestURI()
	t.reqHead = requestHead(t.host, t.path)
	return t, nil
}

// Targets is the number of targets in Config.URL.
func (e *Engine) Targets() int { return len(e.targets) }

// ResolveTarget returns the address of a ws:// URL's host and port
// (default port 80).
func ResolveTarget(u *url.URL) (netip.AddrPort, error) {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: port %q", ErrBadURL, port)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.LookupIP(host)
		if lerr != nil || len(ips) == 0 {
			return netip.AddrPort{}, fmt.Errorf("%w: resolve %q: %v", ErrBadURL, host, lerr)
		}
		a, _ = netip.AddrFromSlice(ips[0])
		for _, ip := range ips {
			if ip4 := ip.To4(); ip4 != nil {
				a, _ = netip.AddrFromSlice(ip4)
				break
			}
		}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// Open is the number of connections whose handshake completed and that have
// not ended.
func (e *Engine) Open() int { return int(e.open.Load()) }

// Dial starts a connection to target idx modulo Targets: socket, bind,
// non-blocking connect. The rest happens on the poller; h learns of the
// outcome. idx is the caller's own number for the connection
// (Conn.Index). A failure before the connect is in flight is returned, as
// a *FailError, and h is not called.
func (e *Engine) Dial(h Handler, idx int) (*Conn, error) {
	return e.DialTarget(h, idx, idx)
}

// DialTarget is Dial to target tgt modulo Targets (Conn.Target).
func (e *Engine) DialTarget(h Handler, idx, tgt int) (*Conn, error) {
	t := e.target(tgt)
	return e.dial(h, idx, t, t.reqHead)
}

// target is target i modulo Targets.
func (e *Engine) target(i int) *target {
	i %= len(e.targets)
	if i < 0 {
		i += len(e.targets)
	}
	return &e.targets[i]
}

// dial starts a connection to t that sends head as its request.
func (e *Engine) dial(h Handler, idx int, t *target, head []byte) (*Conn, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	fd, err := unix.Socket(t.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, classify(err)
	}
	// Latency is the point of the tool: never let Nagle hold a frame back.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if n := len(e.cfg.Sources); n > 0 {
		src := e.cfg.Sources[(e.src.Add(1)-1)%uint64(n)]
		// The port is then picked at connect time for the whole 4-tuple, so
		// each source address offers its ephemeral ports to every target.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		var sa unix.Sockaddr
		if src.Is4() {
			sa = &unix.SockaddrInet4{Addr: src.As4()}
		} else {
			sa = &unix.SockaddrInet6{Addr: src.As16()}
		}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return nil, classify(err)
		}
	}
	c := &Conn{e: e, h: h, fd: fd, idx: idx, tgt: t.index, head: head, start: time.Now().UnixNano()}
	if err := unix.Connect(fd, t.sockaddr()); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, classify(err)
	}
	c.mu.Lock()
	// Registered under the lock so that a report cannot reach the
	// connection before it is set up.
	if err := e.poller.Add(fd, netpoll.Write|netpoll.OneShot, c.event); err != nil {
		c.mu.Unlock()
		unix.Close(fd)
		return nil, &FailError{Cause: CauseOther, Err: err}
	}
	e.wheel.Schedule(&c.timer, e.cfg.HandshakeTimeout, c)
	c.mu.Unlock()
	return c, nil
}

// Close stops the engine: every connection still registered is closed
// (its Handler sees ErrClosed), and the goroutines are stopped and waited
// for. Calling it twice is safe.
func (e *Engine) Close() error {
	e.once.Do(func() {
		e.closed.Store(true)
		e.wheel.Stop()
		_ = e.poller.Close()
		e.pool.Close()
	})
	return nil
}

// requestHead is the handshake request for target (path and query) on
// host, up to and excluding the Sec-WebSocket-Key value.
func requestHead(host, target string) []byte {
	return []byte("GET " + target + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ")
}

// newKey returns a fresh Sec-WebSocket-Key.
func newKey() (k [24]byte) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	base64.StdEncoding.Encode(k[:], raw[:])
	return k
}

// acceptFor is the Sec-WebSocket-Accept a server must answer key with.
func acceptFor(key []byte) string {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// classify turns a socket error into a FailError with its cause.
func classify(err error) *FailError {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		if errors.Is(err, ErrClosed) {
			return &FailError{Cause: "closed", Err: err}
		}
		return &FailError{Cause: CauseOther, Err: err}
	}
	switch errno {
	case unix.ECONNREFUSED:
		return &FailError{Cause: CauseRefused, Err: err}
	case unix.ETIMEDOUT:
		return &FailError{Cause: CauseTimeout, Err: err}
	case unix.ECONNRESET, unix.EPIPE, unix.ECONNABORTED:
		return &FailError{Cause: CauseReset, Err: err}
	case unix.EADDRNOTAVAIL, unix.EADDRINUSE:
		return &FailError{Cause: CauseNoAddr, Err: err}
	case unix.EMFILE, unix.ENFILE:
		return &FailError{Cause: CauseFiles, Err: err}
	}
	return &FailError{Cause: CauseOther, Err: err}
}
