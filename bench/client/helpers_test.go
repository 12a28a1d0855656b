package client

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// waitLimit bounds every wait, so that a broken engine fails a test
// instead of hanging it.
const waitLimit = 120 * time.Second

// testServer is a TCP listener on 127.0.0.1 port 0 that runs serve on a
// goroutine per accepted connection. The tests' peer may spend goroutines
// freely; only the engine under test may not.
type testServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	live atomic.Int64 // serve calls running

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startServer(t testing.TB, serve func(net.Conn)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.live.Add(1)
			s.wg.Go(func() {
				defer s.live.Add(-1)
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) url(path string) string { return "ws://" + s.ln.Addr().String() + path }

// echoServe upgrades with gobwas/ws and echoes data frames. Every client
// frame must be masked; an unmasked one is counted in unmasked and ends the
// connection. A close is answered with the same payload.
func echoServe(unmasked *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		for {
			f, err := ws.ReadFrame(c)
			if err != nil {
				return
			}
			if !f.Header.Masked {
				unmasked.Add(1)
				return
			}
			f = ws.UnmaskFrameInPlace(f)
			switch f.Header.OpCode {
			case ws.OpClose:
				_ = ws.WriteFrame(c, ws.NewCloseFrame(f.Payload))
				return
			case ws.OpPing, ws.OpPong:
				continue
			}
			if err := ws.WriteFrame(c, ws.NewFrame(f.Header.OpCode, true, f.Payload)); err != nil {
				return
			}
		}
	}
}

// rawServe reads the handshake request with net/http, passes it to got,
// writes reply(key), then runs after (or reads until the client goes).
func rawServe(got chan<- *http.Request, reply func(key string) []byte, after func(net.Conn, *bufio.Reader)) func(net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if got != nil {
			got <- req
		}
		if _, err := c.Write(reply(req.Header.Get("Sec-WebSocket-Key"))); err != nil {
			return
		}
		if after != nil {
			after(c, br)
			return
		}
		_, _ = io.Copy(io.Discard, br)
	}
}

// acceptOf computes Sec-WebSocket-Accept as RFC 6455 section 4.2.2 says,
// independently of the engine's own function.
func acceptOf(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func switching(accept string) []byte {
	return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n")
}

type message struct {
	c  *Conn
	op ws.OpCode
	p  []byte
}

type ending struct {
	c   *Conn
	err error
}

// recorder is a Handler that passes everything on through channels. They
// are buffered for n connections' worth, so a Handler method never blocks
// in the tests that size them right.
type recorder struct {
	opens  chan *Conn
	msgs   chan message
	closes chan ending
	onOpen func(*Conn)
}

func newRecorder(n int) *recorder {
	return &recorder{opens: make(chan *Conn, n), msgs: make(chan message, 4*n+64), closes: make(chan ending, n)}
}

func (r *recorder) Open(c *Conn) {
	if r.onOpen != nil {
		r.onOpen(c)
	}
	r.opens <- c
}

func (r *recorder) Message(c *Conn, op ws.OpCode, p []byte, now int64) {
	if now <= 0 {
		panic("Message without a read time")
	}
	r.msgs <- message{c: c, op: op, p: bytes.Clone(p)}
}

func (r *recorder) Closed(c *Conn, err error) { r.closes <- ending{c: c, err: err} }

// recv returns the next value of ch, failing the test after waitLimit.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %s", what, waitLimit)
		var zero T
		return zero
	}
}

// none fails the test if ch holds a value now.
func none[T any](t testing.TB, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	default:
	}
}

func newEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func dial(t testing.TB, e *Engine, h Handler, idx int) *Conn {
	t.Helper()
	c, err := e.Dial(h, idx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c
}

// open dials one connection and waits for its Open.
func open(t testing.TB, e *Engine, r *recorder) *Conn {
	t.Helper()
	c := dial(t, e, r, 0)
	if got := recv(t, r.opens, "Open"); got != c {
		t.Fatalf("Open for %p, want %p", got, c)
	}
	return c
}

// wantCause waits for a Closed and checks its cause.
func wantCause(t testing.TB, r *recorder, cause string) error {
	t.Helper()
	end := recv(t, r.closes, "Closed")
	if end.err == nil {
		t.Fatalf("Closed with nil error, want cause %q", cause)
	}
	var fe *FailError
	if !errors.As(end.err, &fe) {
		t.Fatalf("Closed with %T %v, want a *FailError", end.err, end.err)
	}
	if got := Cause(end.err); got != cause {
		t.Fatalf("cause %q (%v), want %q", got, end.err, cause)
	}
	return end.err
}

// eventually polls cond until it holds or waitLimit passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// readClientFrame reads one frame from the client side, checks that it is
// masked and returns it unmasked.
func readClientFrame(r io.Reader) (ws.Frame, error) {
	f, err := ws.ReadFrame(r)
	if err != nil {
		return f, err
	}
	if !f.Header.Masked {
		return f, errors.New("client frame not masked")
	}
	return ws.UnmaskFrameInPlace(f), nil
}
