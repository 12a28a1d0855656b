package client

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"

	"github.com/gobwas/ws"
)

// DialQuery adds its query to the URL's, for that connection only.
func TestDialQuery(t *testing.T) {
	got := make(chan *http.Request, 4)
	srv := startServer(t, rawServe(got, func(key string) []byte { return switching(acceptOf(key)) }, nil))
	for _, c := range []struct{ path, query, want string }{
		{"/ws/chat", "token=a.b.c", "/ws/chat?token=a.b.c"},
		{"/ws/chat?x=1", "token=a.b.c", "/ws/chat?x=1&token=a.b.c"},
		{"/ws/chat", "", "/ws/chat"},
	} {
		e := newEngine(t, Config{URL: srv.url(c.path)})
		r := newRecorder(2)
		conn, err := e.DialQuery(r, 3, c.query)
		if err != nil {
			t.Fatal(err)
		}
		if req := recv(t, got, "request"); req.RequestURI != c.want || req.Host != srv.ln.Addr().String() {
			t.Errorf("%s with %q: request %s Host %s, want %s", c.path, c.query, req.RequestURI, req.Host, c.want)
		}
		if o := recv(t, r.opens, "Open"); o != conn || o.Index() != 3 {
			t.Errorf("Open of %p index %d", o, o.Index())
		}
		// The engine's own connections still ask for the URL alone.
		dial(t, e, r, 4)
		if req := recv(t, got, "request"); req.RequestURI != c.path {
			t.Errorf("Dial after DialQuery asked for %s, want %s", req.RequestURI, c.path)
		}
	}
}

// Abort resets the connection: the server reads no close frame but
// ECONNRESET, and the handler sees a nil error once.
func TestAbort(t *testing.T) {
	got := make(chan error, 1)
	srv := startServer(t, func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		f, err := ws.ReadFrame(c)
		if err == nil {
			err = fmt.Errorf("read a frame of opcode %d", f.Header.OpCode)
		}
		got <- err
	})
	e := newEngine(t, Config{URL: srv.url("/")})
	r := newRecorder(1)
	c := open(t, e, r)
	c.Abort()
	c.Abort()
	c.Close()
	if end := recv(t, r.closes, "Closed"); end.c != c || end.err != nil {
		t.Fatalf("Closed(%p, %v), want nil error", end.c, end.err)
	}
	if err := recv(t, got, "server read"); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server read %v, want ECONNRESET", err)
	}
	none(t, r.closes, "second Closed")
	if e.Open() != 0 {
		t.Errorf("Open() = %d after Abort", e.Open())
	}
}
