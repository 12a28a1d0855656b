package acceptor

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/netpoll"
)

// pending is a connection between accept and the end of its request head.
// Its lock is held by whoever acts on it (the read task or the deadline),
// so the fd is never closed while another goroutine reads it.
type pending struct {
	a      *Acceptor
	fd     int
	remote netip.AddrPort
	timer  netpoll.Timer

	mu      sync.Mutex
	done    bool
	polled  bool   // registered with the poller
	partial []byte // head bytes of earlier reads; nil until a head is split
	// hs is set while a TLS handshake runs: its goroutine owns the fd, and
	// the deadline or Close only tell it to stop.
	hs *tlsHandshake
}

// tlsHandshake is the state a TLS handshake goroutine shares with the
// poller callback and the deadline.
type tlsHandshake struct {
	// conn outlives the handshake in the upgraded connection, so it is
	// allocated apart: what only the handshake needs goes with it.
	conn  *TLSConn
	wake  chan struct{} // readiness, from the poller
	abort chan struct{} // closed by stop
	why   string        // why it was stopped; guarded by pending.mu
}

// stop tells the handshake goroutine to give up. pending.mu is held.
func (hs *tlsHandshake) stop(why string) {
	if hs.why == "" {
		hs.why = why
		close(hs.abort)
	}
}

// onEvent runs on the poller goroutine: the read itself happens on the pool.
func (p *pending) onEvent(ev netpoll.Event) {
	p.mu.Lock()
	hs := p.hs
	if hs != nil && ev&netpoll.Closed != 0 {
		hs.stop("closed")
	}
	p.mu.Unlock()
	if hs != nil {
		select {
		case hs.wake <- struct{}{}:
		default:
		}
		return
	}
	if ev&netpoll.Closed != 0 {
		return
	}
	if err := p.a.cfg.Pool.Schedule(p); err != nil {
		p.mu.Lock()
		if !p.done {
			p.finish()
			p.a.closeFd(p.fd, p.remote)
		}
		p.mu.Unlock()
	}
}

// Expire is the handshake deadline.
func (p *pending) Expire(int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if p.hs != nil {
		p.hs.stop("timeout")
		return
	}
	p.finish()
	p.a.reject("timeout")
	if p.a.cfg.TLS == nil {
		writeFull(p.fd, statusResponse(http.StatusRequestTimeout, "request head not received in time"))
	}
	p.a.closeFd(p.fd, p.remote)
}

// abortLocked ends a handshake at once (the acceptor closes). p.mu is held.
func (p *pending) abortLocked() {
	if p.done {
		return
	}
	if p.hs != nil {
		p.hs.stop("closed")
		return
	}
	p.finish()
	p.a.closeFd(p.fd, p.remote)
}

// finish takes p out of the poller, the wheel and the acceptor's set; the
// caller then owns the fd. p.mu is held.
func (p *pending) finish() {
	p.done = true
	p.partial = nil
	p.a.cfg.Wheel.Cancel(&p.timer)
	if p.polled {
		_ = p.a.cfg.Poller.Del(p.fd)
	}
	p.a.forget(p)
}

// await arms read readiness, registering p with the poller the first time.
// p.mu is held.
func (p *pending) await() error {
	if p.polled {
		return p.a.cfg.Poller.Mod(p.fd, netpoll.Read|netpoll.OneShot)
	}
	if err := p.a.cfg.Poller.Add(p.fd, netpoll.Read|netpoll.OneShot, p.onEvent); err != nil {
		return err
	}
	p.polled = true
	return nil
}

// Run reads what the socket holds and, once the head is complete, serves it.
func (p *pending) Run() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	a := p.a
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	b := *bp
	n := copy(b, p.partial)
	eof := false
	for n < len(b) {
		m, err := unix.Read(p.fd, b[n:])
		if m > 0 {
			n += m
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EAGAIN) {
			eof = true
		}
		break
	}
	if a.cfg.TLS != nil {
		p.startTLS(b[:n], eof)
		return
	}
	end := headEnd(b[:n])
	if end < 0 {
		switch {
		case eof:
			p.finish()
			a.reject("eof")
			a.closeFd(p.fd, p.remote)
		case n == len(b):
			p.finish()
			a.reject("head_too_large")
			writeFull(p.fd, statusResponse(http.StatusRequestHeaderFieldsTooLarge, "request head too large"))
			a.closeFd(p.fd, p.remote)
		default:
			// A head split over several segments: keep what came, exactly
			// sized, until the rest arrives or the deadline passes.
			p.partial = append([]byte(nil), b[:n]...)
			if err := p.await(); err != nil {
				p.finish()
				a.closeFd(p.fd, p.remote)
			}
		}
		return
	}
	p.finish()
	a.serve(client{fd: p.fd, remote: p.remote}, b[:end], b[end:n])
}

// startTLS looks at the first bytes of a connection to a TLS port and
// starts its handshake. p.mu is held.
func (p *pending) startTLS(first []byte, eof bool) {
	a := p.a
	switch {
	case len(first) == 0 && eof:
		p.finish()
		a.reject("eof")
		a.closeFd(p.fd, p.remote)
		return
	case len(first) == 0:
		if err := p.await(); err != nil {
			p.finish()
			a.closeFd(p.fd, p.remote)
		}
		return
	case first[0] != recordTypeHandshake:
		// Not a TLS client: most likely plain HTTP to the TLS port, which
		// deserves an answer it can read.
		p.finish()
		a.reject("not_tls")
		if c := first[0]; c >= 'A' && c <= 'Z' {
			writeFull(p.fd, statusResponse(http.StatusBadRequest, "this port speaks TLS: connect with https:// or wss://"))
		}
		a.closeFd(p.fd, p.remote)
		return
	}
	if a.tlsActive.Add(1) > int64(a.cfg.MaxTLSHandshakes) {
		a.tlsActive.Add(-1)
		p.finish()
		a.reject("tls_busy")
		a.closeFd(p.fd, p.remote)
		return
	}
	hs := &tlsHandshake{conn: &TLSConn{}, wake: make(chan struct{}, 1), abort: make(chan struct{})}
	hs.conn.t = transport{
		fd:     p.fd,
		in:     append([]byte(nil), first...),
		wait:   p.waitReadable,
		local:  a.ln.Addr(),
		remote: p.remote,
	}
	hs.conn.tc = tls.Server(&hs.conn.t, a.cfg.TLS)
	a.mu.Lock()
	closed := a.closed
	if !closed {
		// Under a.mu, so that Close's Wait never races this Add.
		a.tlsWG.Add(1)
	}
	a.mu.Unlock()
	if closed {
		a.tlsActive.Add(-1)
		p.finish()
		a.closeFd(p.fd, p.remote)
		return
	}
	p.hs = hs
	go p.handshakeTLS(hs)
}

// recordTypeHandshake starts every TLS client's first record.
const recordTypeHandshake = 0x16

// waitReadable parks the handshake goroutine until the socket is readable
// or the handshake is stopped.
func (p *pending) waitReadable() error {
	hs := p.hs
	p.mu.Lock()
	if hs.why != "" {
		p.mu.Unlock()
		return errAborted
	}
	err := p.await()
	p.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-hs.wake:
		return nil
	case <-hs.abort:
		return errAborted
	}
}

// handshakeTLS runs the TLS handshake and reads the request head through
// it, then serves the request like a plain one.
func (p *pending) handshakeTLS(hs *tlsHandshake) {
	a := p.a
	defer a.tlsWG.Done()
	defer a.tlsActive.Add(-1)
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	b := *bp
	reason := "tls_handshake"
	err := hs.conn.tc.Handshake()
	end, n := -1, 0
	if err == nil {
		reason = "eof"
		end, n, err = readHead(hs.conn.tc, b)
	}
	p.mu.Lock()
	if hs.why != "" {
		reason = hs.why
		err = errAborted
	}
	p.finish()
	p.hs = nil
	p.mu.Unlock()
	switch {
	case err == nil:
		a.serve(client{fd: p.fd, remote: p.remote, tls: hs.conn}, b[:end], b[end:n])
		return
	case errors.Is(err, errHeadTooLarge):
		reason = "head_too_large"
		_, _ = hs.conn.tc.Write(statusResponse(http.StatusRequestHeaderFieldsTooLarge, "request head too large"))
	}
	if reason != "closed" {
		a.reject(reason)
	}
	a.log.Debug("TLS connection refused", "remote", p.remote, "reason", reason, "err", err)
	a.closeFd(p.fd, p.remote)
}

var errHeadTooLarge = errors.New("acceptor: request head too large")

// readHead reads a request head from r into b. It returns the head's
// length and the bytes read.
func readHead(r io.Reader, b []byte) (end, n int, err error) {
	for {
		if end = headEnd(b[:n]); end >= 0 {
			return end, n, nil
		}
		if n == len(b) {
			return -1, n, errHeadTooLarge
		}
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			if end = headEnd(b[:n]); end >= 0 {
				return end, n, nil
			}
			return -1, n, err
		}
	}
}

// client is a connection whose request head is complete: its fd and,
// on a TLS port, its TLS layer, which every answer goes through.
type client struct {
	fd     int
	remote netip.AddrPort
	tls    *TLSConn
}

// write answers the client, through TLS if it speaks it.
func (c client) write(p []byte) error {
	if c.tls != nil {
		_, err := c.tls.tc.Write(p)
		return err
	}
	return writeFull(c.fd, p)
}

func (c client) Write(p []byte) (int, error) {
	if err := c.write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// serve routes a complete request head. It owns the client's fd.
func (a *Acceptor) serve(cl client, head, rest []byte) {
	fd, remote := cl.fd, cl.remote
	rl, ok := parseRequestLine(head)
	if !ok {
		a.refuse(cl, http.StatusBadRequest, "bad_request", "malformed request line")
		return
	}
	service, isWS := servicePath(rl.target)
	if !isWS {
		// Everything read so far goes to net/http, head and body alike.
		data := make([]byte, len(head)+len(rest))
		copy(data[copy(data, head):], rest)
		a.ips.release(remote.Addr())
		if err := a.http.serve(fd, cl.tls, data); err != nil {
			a.reject("http_busy")
			cl.write(statusResponse(http.StatusServiceUnavailable, err.Error()))
			unix.Close(fd)
		}
		return
	}
	switch {
	case !wantsWebSocket(head):
		a.refuse(cl, http.StatusUpgradeRequired, "not_websocket",
			"this endpoint speaks WebSocket: send a WebSocket handshake")
		return
	case a.isDraining():
		a.refuse(cl, http.StatusServiceUnavailable, "draining", "shutting down, connect again")
		return
	case !a.admitUpgrade(cl):
		return
	}
	up, err := a.upgrade(cl, remote, service, rl.target, head)
	if err != nil {
		a.held.Add(-1)
		// The upgrader has answered the client already.
		var rej *RejectError
		reason := "handshake"
		if errors.As(err, &rej) {
			reason = rej.Reason
		}
		a.reject(reason)
		a.log.Debug("handshake refused", "remote", remote, "err", err)
		a.closeFd(fd, remote)
		return
	}
	up.Fd = fd
	up.Rest = rest
	if cl.tls != nil {
		// From now on the owner feeds the TLS layer from epoll readiness.
		cl.tls.t.mode = modeFed
		cl.tls.t.wait = nil
		up.TLS = cl.tls
	}
	a.cfg.Upgraded(up)
}

// refuse answers a request with an error status and closes it.
func (a *Acceptor) refuse(cl client, status int, reason, msg string) {
	a.refuseAfter(cl, status, reason, msg, 0)
}

// refuseAfter is refuse with a Retry-After of retry (see
// statusResponseAfter).
func (a *Acceptor) refuseAfter(cl client, status int, reason, msg string, retry time.Duration) {
	a.reject(reason)
	cl.write(statusResponseAfter(status, msg, retry))
	a.closeFd(cl.fd, cl.remote)
}

// handshake collects what the upgrader's callbacks see of one request.
type handshake struct {
	a   *Acceptor
	req Request
	rej *RejectError // set when a callback of ours refused the request
}

// upgrade runs gobwas/ws's zero-copy Upgrader over the head already read,
// writing its answer to w (the socket). A refusal comes back as
// *RejectError; either way the client has its answer.
func (a *Acceptor) upgrade(w io.Writer, remote netip.AddrPort, service, target string, head []byte) (*Upgraded, error) {
	h := &handshake{a: a, req: Request{Service: service, URI: target, Remote: remote}}
	var user string
	var deflate *deflateNegotiation
	u := ws.Upgrader{
		ReadBufferSize: a.cfg.MaxHeaderBytes,
		OnRequest:      h.onRequest,
		OnHost:         h.onHost,
		OnHeader:       h.onHeader,
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if err := h.checkOrigin(); err != nil {
				return nil, err
			}
			if a.cfg.Authenticate == nil {
				return nil, nil
			}
			name, err := a.cfg.Authenticate(&h.req)
			if err != nil {
				var rej *RejectError
				if errors.As(err, &rej) {
					// The client reads Err's text; Reason is for metrics.
					msg := rej.Reason
					if rej.Err != nil {
						msg = rej.Err.Error()
					}
					return nil, h.refuse(rej.Status, rej.Reason, msg)
				}
				return nil, h.refuse(http.StatusUnauthorized, "auth", err.Error())
			}
			user = name
			return nil, nil
		},
	}
	if a.cfg.Compress != nil && a.cfg.Compress(service) {
		deflate = &deflateNegotiation{}
		u.Negotiate = deflate.negotiate
	}
	hc := &headConn{head: head, w: w}
	hs, err := u.Upgrade(hc)
	if err != nil {
		if h.rej != nil {
			return nil, h.rej
		}
		status := http.StatusBadRequest
		var cre *ws.ConnectionRejectedError
		if errors.As(err, &cre) && cre.StatusCode() != 0 {
			status = cre.StatusCode()
		}
		if !hc.wrote {
			// The upgrader answers nothing to a request line it cannot
			// parse; the client still deserves a status.
			w.Write(statusResponse(status, err.Error()))
		}
		return nil, &RejectError{Status: status, Reason: "handshake", Err: err}
	}
	if a.cfg.Authenticate != nil {
		target = withoutToken(target)
	}
	up := &Upgraded{
		Remote:   remote,
		Service:  service,
		URI:      target,
		User:     user,
		Protocol: hs.Protocol,
	}
	if deflate != nil {
		up.Deflate = deflate.window
	}
	return up, nil
}

// refuse records why the request is refused and returns the error that
// makes gobwas/ws answer with status. The upgrader matches its own error
// type exactly, so ours travels beside it rather than wrapped around it.
func (h *handshake) refuse(status int, reason, msg string) error {
	h.rej = &RejectError{Status: status, Reason: reason, Err: errors.New(msg)}
	return ws.RejectConnectionError(ws.RejectionStatus(status), ws.RejectionReason(msg))
}

func (h *handshake) onRequest([]byte) error {
	if h.req.Service == "" || strings.Contains(h.req.Service, "/") || !h.a.cfg.Services(h.req.Service) {
		return h.refuse(http.StatusNotFound, "unknown_service", fmt.Sprintf("no service %q", h.req.Service))
	}
	return nil
}

func (h *handshake) onHost(host []byte) error {
	h.req.Host = string(host)
	return nil
}

func (h *handshake) onHeader(key, value []byte) error {
	switch {
	case strings.EqualFold(string(key), "Origin"):
		h.req.Origin = string(value)
	case strings.EqualFold(string(key), "Authorization"):
		h.req.Authorization = string(value)
	case strings.EqualFold(string(key), "Cookie"):
		h.req.Cookie = string(value)
	}
	return nil
}

// checkOrigin lets through requests without Origin (not from a browser),
// from the gateway's own host, or from an origin allowed for the service;
// a page elsewhere must not open connections with the user's cookies.
func (h *handshake) checkOrigin() error {
	origin := h.req.Origin
	if origin == "" {
		return nil
	}
	allowed := h.a.cfg.AllowedOrigins
	if own, ok := h.a.cfg.ServiceOrigins[h.req.Service]; ok {
		allowed = own
	}
	for _, o := range allowed {
		if o == "*" || strings.EqualFold(o, origin) {
			return nil
		}
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" && strings.EqualFold(u.Host, h.req.Host) {
		return nil
	}
	return h.refuse(http.StatusForbidden, "origin", fmt.Sprintf("origin %q not allowed", origin))
}

// Token returns the credential of a request: the "token" query parameter,
// or else the bearer token of the Authorization header.
func (r *Request) Token() string {
	if i := strings.IndexByte(r.URI, '?'); i >= 0 {
		if q, err := url.ParseQuery(r.URI[i+1:]); err == nil {
			if t := q.Get("token"); t != "" {
				return t
			}
		}
	}
	if t, ok := strings.CutPrefix(r.Authorization, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// withoutToken returns a request target without its token parameters
// (named "token" once unescaped, as Request.Token reads them), the rest
// of the query left byte for byte as the client sent it.
func withoutToken(target string) string {
	path, query, ok := strings.Cut(target, "?")
	if !ok {
		return target
	}
	var kept []string
	dropped := false
	for part := range strings.SplitSeq(query, "&") {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == "token" {
			dropped = true
			continue
		}
		kept = append(kept, part)
	}
	if !dropped {
		return target
	}
	if len(kept) == 0 {
		return path
	}
	return path + "?" + strings.Join(kept, "&")
}

// headConn is the io.ReadWriter the upgrader sees: the request head
// already read, and the socket for the answer.
type headConn struct {
	head  []byte
	w     io.Writer
	wrote bool
}

func (c *headConn) Read(p []byte) (int, error) {
	if len(c.head) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, c.head)
	c.head = c.head[n:]
	return n, nil
}

func (c *headConn) Write(p []byte) (int, error) {
	c.wrote = true
	return c.w.Write(p)
}

// writeFull writes p to a non-blocking socket, waiting a bounded time for
// room. Handshake answers are a few hundred bytes written into an empty
// send buffer, so the wait is for pathological peers only.
func writeFull(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if n > 0 {
			p = p[n:]
			continue
		}
		switch {
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if k, _ := unix.Poll(fds, 1000); k <= 0 {
				return fmt.Errorf("acceptor: write: peer does not read")
			}
		default:
			return fmt.Errorf("acceptor: write: %w", err)
		}
	}
	return nil
}

// statusResponse is a complete plain-text HTTP answer that closes the
// connection.
func statusResponse(status int, msg string) []byte { return statusResponseAfter(status, msg, 0) }

// statusResponseAfter is statusResponse with, when retry is not 0, a
// Retry-After of whole seconds, rounded up and at least one.
func statusResponseAfter(status int, msg string, retry time.Duration) []byte {
	body := msg + "\n"
	b := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n",
		status, http.StatusText(status), len(body))
	if retry != 0 {
		secs := max(int64((retry+time.Second-1)/time.Second), 1)
		b = fmt.Appendf(b, "Retry-After: %d\r\n", secs)
	}
	return append(append(b, "\r\n"...), body...)
}
