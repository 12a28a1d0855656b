package acceptor

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/netpoll"
)

// Defaults for the zero values of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxHeaderBytes   = 8 << 10
	DefaultMaxConnsPerIP    = 4096
	DefaultMaxHTTPConns     = 1024
	DefaultMaxTLSHandshakes = 1024
	DefaultMaxHandshakeRate = 10000
)

// maxConnsRetryAfter is the Retry-After of a handshake refused because the
// worker is full: connections free up slowly, and the kernel may well send
// the retry to another worker of the port anyway.
const maxConnsRetryAfter = 5 * time.Second

// DefaultMaxConns is the default of Config.MaxConns: nine tenths of the
// process's open-files limit, leaving the rest to handshakes under way,
// plain HTTP connections, the bus and the poller. A worker that refuses at
// its own limit answers with a clear 503; one that runs out of file
// descriptors can only stop accepting.
func DefaultMaxConns() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 {
		return 1 << 20
	}
	return int(min(lim.Cur, 1<<30) * 9 / 10)
}

// acceptBatch bounds the connections taken per readiness event, so that a
// connect storm does not keep the poller goroutine from other sockets.
const acceptBatch = 256

// acceptPause is how long accepting stops after the process ran out of file
// descriptors or memory: the listener stays readable, so accepting again at
// once would spin.
const acceptPause = 100 * time.Millisecond

// Config configures an Acceptor. Poller, Pool, Wheel, Services and Upgraded
// are required; every other zero value means its default.
type Config struct {
	// Poller delivers readiness for the listener and for connections still
	// in their handshake.
	Poller *netpoll.Poller
	// Pool runs handshakes; the poller goroutine never reads a socket.
	Pool *netpoll.Pool
	// Wheel holds the handshake deadlines.
	Wheel *netpoll.Wheel

	// HandshakeTimeout bounds the time from accept to a complete request
	// head (default 5s), the TLS handshake included. It also bounds
	// reading a plain HTTP request head.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds the request head (default 8 KiB); a longer one
	// is refused with 431.
	MaxHeaderBytes int
	// MaxConnsPerIP bounds the connections one client address holds on this
	// acceptor, handshakes included (default 4096; negative: no limit).
	// Past it a new connection is answered 429 at once.
	MaxConnsPerIP int
	// MaxConns bounds the WebSocket connections handed over by Upgraded and
	// not yet released (default DefaultMaxConns(); negative: no limit).
	// Past it a handshake is answered 503 with Retry-After.
	MaxConns int
	// MaxHandshakeRate bounds the upgrades per second, with bursts of as
	// many (default 10000; negative: no limit). Past it a handshake is
	// answered 503 with Retry-After: the seconds until the next one fits.
	MaxHandshakeRate int
	// MaxHTTPConns bounds concurrent plain HTTP connections (default 1024).
	MaxHTTPConns int

	// TLS, when set, makes the port speak TLS only: every connection,
	// WebSocket or plain HTTP, starts with a TLS handshake. Upgraded
	// connections carry their TLS layer in Upgraded.TLS.
	TLS *tls.Config
	// MaxTLSHandshakes bounds the TLS handshakes in flight, each of which
	// holds a goroutine until it ends (default 1024); past it, new
	// connections are closed.
	MaxTLSHandshakes int

	// Services reports whether /ws/<name> names a service; others get 404.
	Services func(name string) bool
	// Compress, when set, reports whether the clients of a service may
	// negotiate permessage-deflate; see Upgraded.Deflate.
	Compress func(service string) bool
	// AllowedOrigins lists the browser origins ("https://chat.example.com")
	// that may connect besides the gateway's own host; "*" allows any. A
	// request without an Origin header (not from a browser) is allowed.
	AllowedOrigins []string
	// ServiceOrigins replaces AllowedOrigins for the services it names:
	// their clients may come from the gateway's own host and from these
	// origins only. A refused origin gets 403, counted as "origin".
	ServiceOrigins map[string][]string
	// Authenticate, when set, checks each WebSocket request and names its
	// user ("" for an anonymous client). An error refuses the handshake
	// with 401, or with the status and reason of a *RejectError, whose Err
	// text is the body the client reads. The credential the handshake
	// consumed leaves with it: the token query parameter (see
	// [Request.Token]) is taken out of Upgraded.URI, which travels on.
	Authenticate func(*Request) (user string, err error)
	// HTTP serves every request that is not for /ws/; nil answers 404.
	HTTP http.Handler

	// Upgraded receives each upgraded connection, on a pool goroutine (or,
	// on a TLS port, the goroutine that ran the handshake). It
	// takes ownership of the fd and of its per-address slot, which it gives
	// back with [Acceptor.Release] when the connection ends. The Upgraded
	// value and its Rest slice are valid only until the call returns.
	Upgraded func(*Upgraded)
	// Rejected, when set, is told the reason of every refused handshake,
	// for metrics. It must be cheap and safe for concurrent use.
	Rejected func(reason string)

	Logger *slog.Logger
}

// Upgraded is a connection that completed the WebSocket handshake.
type Upgraded struct {
	Fd      int
	Remote  netip.AddrPort
	Service string
	// URI is the request target: path and query, without the token
	// parameter when Config.Authenticate checked it.
	URI string
	// User is the user named by Config.Authenticate, if any.
	User string
	// Protocol is the negotiated subprotocol, if any.
	Protocol string
	// Deflate is non-zero when permessage-deflate was negotiated, without
	// context takeover either way: it is log2 of the window the client
	// decompresses with (8 to 15), so a compressed message must be no
	// longer than 1<<Deflate bytes.
	Deflate uint8
	// Rest holds bytes the client sent after the request head (frames it
	// did not wait to send); they come before anything still in the socket.
	// On a TLS port they are decrypted, and more may wait inside TLS: the
	// new owner reads TLS until ErrWantRead before waiting for readiness.
	Rest []byte
	// TLS is the connection's TLS layer on a TLS port, nil otherwise. The
	// socket carries ciphertext: the owner reads through TLS.Feed and
	// TLS.Read and writes what TLS.Seal returns.
	TLS *TLSConn
}

// Request is what Config.Authenticate sees of a WebSocket handshake.
type Request struct {
	Service       string
	URI           string
	Remote        netip.AddrPort
	Host          string
	Origin        string
	Authorization string
	Cookie        string
}

// Acceptor accepts connections on one Listener and runs their handshakes.
type Acceptor struct {
	cfg    Config
	ln     *Listener
	log    *slog.Logger
	ips    ipLimit
	http   *httpHandoff
	bufs   sync.Pool // *[]byte of MaxHeaderBytes
	pauses *time.Timer

	tlsActive  atomic.Int64   // TLS handshakes in flight
	tlsWG      sync.WaitGroup // their goroutines
	held       atomic.Int64   // connections handed over and not released
	handshakes netpoll.Rate   // MaxHandshakeRate
	hsBucket   atomic.Int64   // its bucket

	mu        sync.Mutex
	pending   map[*pending]struct{}
	accepting bool
	// lnMu keeps the listening fd open while the poller goroutine accepts
	// on it: a report collected before Del may still arrive after it.
	lnMu     sync.Mutex
	lnClosed bool
	draining bool
	closed   bool
}

// New prepares an Acceptor for ln; Start begins accepting.
func New(ln *Listener, cfg Config) (*Acceptor, error) {
	switch {
	case cfg.Poller == nil, cfg.Pool == nil, cfg.Wheel == nil:
		return nil, fmt.Errorf("%w: Poller, Pool and Wheel are required", ErrConfig)
	case cfg.Services == nil, cfg.Upgraded == nil:
		return nil, fmt.Errorf("%w: Services and Upgraded are required", ErrConfig)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.MaxHTTPConns <= 0 {
		cfg.MaxHTTPConns = DefaultMaxHTTPConns
	}
	if cfg.MaxTLSHandshakes <= 0 {
		cfg.MaxTLSHandshakes = DefaultMaxTLSHandshakes
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns()
	}
	if cfg.MaxHandshakeRate == 0 {
		cfg.MaxHandshakeRate = DefaultMaxHandshakeRate
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Acceptor{
		cfg:     cfg,
		ln:      ln,
		log:     cfg.Logger,
		ips:     ipLimit{max: cfg.MaxConnsPerIP, n: make(map[netip.Addr]int32)},
		pending: make(map[*pending]struct{}),
		// A second's worth at once: a burst of reconnects after a restart
		// elsewhere is what the limit must smooth, not refuse outright.
		handshakes: netpoll.NewRate(cfg.MaxHandshakeRate, cfg.MaxHandshakeRate),
	}
	a.http = newHTTPHandoff(cfg.HTTP, cfg.HandshakeTimeout, cfg.MaxHeaderBytes, cfg.MaxHTTPConns, ln.Addr(), cfg.Logger)
	size := cfg.MaxHeaderBytes
	a.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return a, nil
}

// Start registers the listener with the poller.
func (a *Acceptor) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.draining {
		return ErrClosed
	}
	if err := a.cfg.Poller.Add(a.ln.Fd(), netpoll.Read, a.onListenerEvent); err != nil {
		return fmt.Errorf("acceptor: register listener: %w", err)
	}
	a.accepting = true
	return nil
}

// Addr is the listener's address.
func (a *Acceptor) Addr() netip.AddrPort { return a.ln.Addr() }

// Release gives back the per-address slot of a connection handed over by
// Config.Upgraded, and its place under Config.MaxConns, once that
// connection is closed.
func (a *Acceptor) Release(remote netip.AddrPort) {
	a.held.Add(-1)
	a.ips.release(remote.Addr())
}

// Held reports the connections handed over and not yet released.
func (a *Acceptor) Held() int { return int(a.held.Load()) }

// admitUpgrade takes a place under MaxConns and a token of the handshake
// rate for a WebSocket request, or answers it with 503. The place is the
// caller's to give back if the upgrade fails. The rate is checked second,
// so that a full worker spends no tokens; a token is spent whatever the
// upgrade's outcome, since the rate bounds the work of handshakes.
func (a *Acceptor) admitUpgrade(cl client) bool {
	if held := a.held.Add(1); a.cfg.MaxConns > 0 && held > int64(a.cfg.MaxConns) {
		a.held.Add(-1)
		a.refuseAfter(cl, http.StatusServiceUnavailable, "max_conns",
			"this server holds all the connections it may: try again later", maxConnsRetryAfter)
		return false
	}
	if ok, wait := a.handshakes.TakeShared(&a.hsBucket, a.cfg.Wheel.Now()); !ok {
		a.held.Add(-1)
		a.refuseAfter(cl, http.StatusServiceUnavailable, "handshake_rate",
			"too many new connections: try again shortly", wait)
		return false
	}
	return true
}

// Pending reports the connections still in their handshake.
func (a *Acceptor) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// StopAccepting closes the listener. Handshakes under way are refused with
// 503 when their request arrives; plain HTTP connections finish their
// current request. It is the first step of a drain; safe to call twice.
func (a *Acceptor) StopAccepting() {
	a.mu.Lock()
	if a.draining {
		a.mu.Unlock()
		return
	}
	a.draining = true
	wasAccepting := a.accepting
	a.accepting = false
	if a.pauses != nil {
		a.pauses.Stop()
	}
	a.mu.Unlock()
	a.lnMu.Lock()
	if wasAccepting {
		_ = a.cfg.Poller.Del(a.ln.Fd())
	}
	_ = a.ln.Close()
	a.lnClosed = true
	a.lnMu.Unlock()
	a.http.shutdown()
}

// Close stops accepting, aborts every handshake under way (waiting for the
// TLS handshakes to give up) and closes the plain HTTP connections. Safe
// to call twice.
func (a *Acceptor) Close() {
	a.StopAccepting()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	list := make([]*pending, 0, len(a.pending))
	for p := range a.pending {
		list = append(list, p)
	}
	a.mu.Unlock()
	for _, p := range list {
		p.mu.Lock()
		p.abortLocked()
		p.mu.Unlock()
	}
	a.tlsWG.Wait()
	a.http.close()
}

// onListenerEvent runs on the poller goroutine. Accepting is cheap (one
// syscall and a registration per connection) so it is done here instead of
// bouncing through the pool.
func (a *Acceptor) onListenerEvent(ev netpoll.Event) {
	if ev&netpoll.Closed != 0 {
		return
	}
	a.lnMu.Lock()
	defer a.lnMu.Unlock()
	if a.lnClosed {
		return
	}
	for i := 0; i < acceptBatch; i++ {
		fd, remote, err := a.ln.Accept()
		if errors.Is(err, ErrWouldBlock) {
			return
		}
		if err != nil {
			a.acceptFailed(err)
			return
		}
		a.admit(fd, remote)
	}
}

func (a *Acceptor) acceptFailed(err error) {
	if !errors.Is(err, unix.EMFILE) && !errors.Is(err, unix.ENFILE) &&
		!errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.ENOMEM) {
		a.log.Warn("accept failed", "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.accepting {
		return
	}
	a.log.Warn("accept paused: out of resources", "err", err, "pause", acceptPause)
	a.reject("resources")
	// Disarm the listener instead of spinning on a readable socket whose
	// connections cannot be taken.
	if e := a.cfg.Poller.Mod(a.ln.Fd(), 0); e != nil {
		return
	}
	a.pauses = time.AfterFunc(acceptPause, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.accepting {
			_ = a.cfg.Poller.Mod(a.ln.Fd(), netpoll.Read)
		}
	})
}

func (a *Acceptor) admit(fd int, remote netip.AddrPort) {
	if !a.ips.acquire(remote.Addr()) {
		a.reject("per_ip_limit")
		writeFull(fd, statusResponse(http.StatusTooManyRequests, "too many connections from this address"))
		unix.Close(fd)
		return
	}
	p := &pending{a: a, fd: fd, remote: remote}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.closeFd(fd, remote)
		return
	}
	a.pending[p] = struct{}{}
	a.mu.Unlock()
	// The lock orders registration against the deadline: Expire cannot
	// close the fd before Add has returned.
	p.mu.Lock()
	defer p.mu.Unlock()
	a.cfg.Wheel.Schedule(&p.timer, a.cfg.HandshakeTimeout, p)
	// A client sends its request as soon as it is connected, so it has
	// usually arrived by the time a pool goroutine looks: read at once, and
	// register with the poller only when nothing is there yet. That spares
	// most connections an epoll registration, its removal and a wake-up.
	if a.cfg.Pool.TrySchedule(p) {
		return
	}
	if err := p.await(); err != nil {
		a.log.Warn("register connection", "err", err)
		p.done = true
		a.cfg.Wheel.Cancel(&p.timer)
		a.forget(p)
		a.closeFd(fd, remote)
	}
}

// closeFd closes a connection the acceptor still owns and frees its slot.
func (a *Acceptor) closeFd(fd int, remote netip.AddrPort) {
	unix.Close(fd)
	a.ips.release(remote.Addr())
}

func (a *Acceptor) forget(p *pending) {
	a.mu.Lock()
	delete(a.pending, p)
	a.mu.Unlock()
}

func (a *Acceptor) reject(reason string) {
	if a.cfg.Rejected != nil {
		a.cfg.Rejected(reason)
	}
}

func (a *Acceptor) isDraining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining
}

// ipLimit counts connections per client address.
type ipLimit struct {
	mu  sync.Mutex
	max int
	n   map[netip.Addr]int32
}

func (l *ipLimit) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && int(l.n[ip]) >= l.max {
		return false
	}
	l.n[ip]++
	return true
}

func (l *ipLimit) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.n[ip]; n > 1 {
		l.n[ip] = n - 1
	} else {
		delete(l.n, ip)
	}
}
