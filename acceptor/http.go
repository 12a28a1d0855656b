package acceptor

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// httpHandoff serves plain HTTP requests that arrived on the WebSocket
// port. Such a connection leaves the epoll world: it becomes a net.Conn
// (net.FileConn duplicates the fd, and the original is closed at once) and
// is served by net/http with a goroutine of its own. That costs memory, so
// their number is bounded; they are health checks, metrics and static files.
type httpHandoff struct {
	srv    *http.Server
	ln     *handoffListener
	max    int64
	active atomic.Int64
	done   chan struct{}
	once   sync.Once
}

func newHTTPHandoff(h http.Handler, headerTimeout time.Duration, maxHeader, maxConns int, addr netip.AddrPort, log *slog.Logger) *httpHandoff {
	if h == nil {
		h = http.NotFoundHandler()
	}
	hh := &httpHandoff{
		ln: &handoffListener{
			conns:  make(chan net.Conn),
			closed: make(chan struct{}),
			addr:   net.TCPAddrFromAddrPort(addr),
		},
		max:  int64(maxConns),
		done: make(chan struct{}),
	}
	hh.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(hh.done)
		_ = hh.srv.Serve(hh.ln)
	}()
	return hh
}

var errHTTPBusy = errors.New("too many HTTP connections, try again")

// serve hands fd to net/http, with data (the bytes already read from it,
// decrypted when tc is its TLS layer) replayed first. On errHTTPBusy the
// caller still owns fd and answers it; otherwise fd is no longer the
// caller's.
func (h *httpHandoff) serve(fd int, tc *TLSConn, data []byte) error {
	if h.active.Add(1) > h.max {
		h.active.Add(-1)
		return errHTTPBusy
	}
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		h.active.Add(-1)
		return nil
	}
	if tc != nil {
		// TLS continues over the socket net/http now owns.
		tc.t.nc = c
		tc.t.mode = modeHandoff
		c = tc.tc
	}
	pc := &prefixConn{Conn: c, prefix: data, active: &h.active}
	select {
	case h.ln.conns <- pc:
	case <-h.ln.closed:
		pc.Close()
	}
	return nil
}

// shutdown stops taking connections and lets requests in flight finish,
// for at most a few seconds.
func (h *httpHandoff) shutdown() {
	h.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.srv.Shutdown(ctx)
	})
	<-h.done
}

// close ends every HTTP connection now.
func (h *httpHandoff) close() {
	_ = h.srv.Close()
	<-h.done
}

// handoffListener is a net.Listener fed by serve.
type handoffListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// prefixConn replays the bytes read before the handoff.
type prefixConn struct {
	net.Conn
	prefix []byte
	active *atomic.Int64
	once   sync.Once
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) Close() error {
	c.once.Do(func() { c.active.Add(-1) })
	return c.Conn.Close()
}
