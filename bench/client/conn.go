package client

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/netpoll"
	"github.com/shoal-gw/shoal/wire"
)

// Connection states.
const (
	stateConnecting uint8 = iota
	stateHandshake
	stateOpen
	stateClosing // fail or Close ran while a task held the connection
	stateClosed
)

// maxResponse bounds the handshake response headers.
const maxResponse = 8 << 10

// readBufSize is the size of the pooled buffers reads go into.
const readBufSize = 32 << 10

// readBufs holds read buffers between reads: a connection owns one only
// for the duration of a read, so an idle connection costs none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// Conn is one client connection of an Engine.
type Conn struct {
	e      *Engine
	h      Handler
	fd     int
	idx    int
	tgt    int    // index of the target dialed
	head   []byte // handshake request up to the key, shared with the target or its own
	start  int64  // dial time, unix ns
	opened int64  // 101 parsed, unix ns
	timer  netpoll.Timer

	// mu guards the fields below. It is held for write syscalls but never
	// while a Handler method runs.
	mu        sync.Mutex
	state     uint8
	busy      bool          // a pool task owns the connection's reads
	pending   netpoll.Event // reported while busy, handled before the task ends
	wantWrite bool          // wq has bytes the socket did not take
	wq        []byte
	failErr   error
	key       [24]byte

	// Owned by the task (busy), not guarded by mu.
	rd  wire.Reader
	hs  []byte // handshake response so far
	now int64  // time of the read being fed
}

// Index is the number given to Dial.
func (c *Conn) Index() int { return c.idx }

// Target is the index of the target the connection was dialed to, among
// the engine's Config.URL list.
func (c *Conn) Target() int { return c.tgt }

// Started is the time Dial was called, in unix nanoseconds.
func (c *Conn) Started() int64 { return c.start }

// Opened is the time the handshake completed, in unix nanoseconds; 0 before.
func (c *Conn) Opened() int64 { return c.opened }

// Send writes one masked frame of op carrying p, or queues it until the
// socket takes it. p is copied. It is safe from any goroutine.
func (c *Conn) Send(op ws.OpCode, p []byte) error {
	c.mu.Lock()
	switch c.state {
	case stateOpen:
	case stateConnecting, stateHandshake:
		c.mu.Unlock()
		return ErrNotOpen
	default:
		c.mu.Unlock()
		return ErrClosed
	}
	if len(c.wq)+len(p) > c.e.cfg.MaxQueue {
		c.mu.Unlock()
		return ErrQueueFull
	}
	c.wq = wire.AppendMaskedFrame(c.wq, op, true, maskKey(), p)
	err := c.flushLocked()
	c.mu.Unlock()
	if err != nil {
		c.fail(err)
	}
	return nil
}

// Close sends a close frame if the connection is open, then closes the
// socket. The Handler's Closed follows with a nil error. Calling it twice
// is safe.
func (c *Conn) Close() {
	c.mu.Lock()
	if c.state == stateOpen && !c.wantWrite {
		c.wq = wire.AppendMaskedClose(c.wq, maskKey(), ws.StatusNormalClosure, "")
		_ = c.flushLocked()
	}
	c.mu.Unlock()
	c.end(nil)
}

func maskKey() (k [4]byte) {
	v := rand.Uint32()
	k[0], k[1], k[2], k[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	return k
}

// flushLocked writes what the socket takes of wq and arms write readiness
// for the rest.
func (c *Conn) flushLocked() error {
	if c.wantWrite && !c.busy {
		// Write readiness is armed; the task will flush.
		return nil
	}
	off := 0
	for off < len(c.wq) {
		n, err := unix.Write(c.fd, c.wq[off:])
		if n > 0 {
			off += n
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return classify(err)
		}
	}
	if off == len(c.wq) {
		// Keep a small buffer for the next frames; drop a large one.
		if cap(c.wq) > 4<<10 {
			c.wq = nil
		} else {
			c.wq = c.wq[:0]
		}
		c.wantWrite = false
		return nil
	}
	// Compact so the queue does not creep along its backing array.
	c.wq = append(c.wq[:0:0], c.wq[off:]...)
	if !c.wantWrite {
		c.wantWrite = true
		if !c.busy {
			// The registration is armed for reading; add writing. A busy task
			// re-arms with it when it ends.
			if err := c.e.poller.Mod(c.fd, c.interestLocked()); err != nil {
				return &FailError{Cause: CauseOther, Err: err}
			}
		}
	}
	return nil
}

// interestLocked is what the registration must wait for in this state.
func (c *Conn) interestLocked() netpoll.Event {
	ev := netpoll.OneShot
	switch c.state {
	case stateConnecting:
		return ev | netpoll.Write
	case stateHandshake, stateOpen:
		ev |= netpoll.Read
	}
	if c.wantWrite {
		ev |= netpoll.Write
	}
	return ev
}

// event is the poller callback. It hands the connection to the pool unless
// a task already owns it, in which case that task handles ev too.
func (c *Conn) event(ev netpoll.Event) {
	c.mu.Lock()
	if c.state >= stateClosing {
		c.mu.Unlock()
		return
	}
	if ev&netpoll.Closed != 0 {
		c.mu.Unlock()
		c.end(&FailError{Cause: "closed", Err: ErrClosed})
		return
	}
	c.pending |= ev
	if c.busy {
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	if err := c.e.pool.Schedule(c); err != nil {
		c.mu.Lock()
		c.busy = false
		c.mu.Unlock()
		c.end(&FailError{Cause: "closed", Err: ErrClosed})
	}
}

// Expire implements netpoll.Expirer: the handshake took too long.
func (c *Conn) Expire(int64) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st < stateOpen {
		c.fail(&FailError{Cause: CauseTimeout})
	}
}

// Run implements netpoll.Task: it handles the reported readiness, then
// re-arms the registration or finishes a close that arrived meanwhile.
func (c *Conn) Run() {
	for {
		c.mu.Lock()
		ev := c.pending
		c.pending = 0
		st := c.state
		c.mu.Unlock()
		if st < stateClosing {
			if err := c.handle(st, ev); err != nil {
				c.fail(err)
			}
		}
		c.mu.Lock()
		if c.pending != 0 && c.state < stateClosing {
			c.mu.Unlock()
			continue
		}
		c.busy = false
		if c.state == stateClosing {
			err := c.failErr
			c.finishLocked()
			c.mu.Unlock()
			c.h.Closed(c, err)
			return
		}
		if c.state < stateClosing {
			if err := c.e.poller.Mod(c.fd, c.interestLocked()); err != nil {
				c.mu.Unlock()
				c.end(&FailError{Cause: CauseOther, Err: err})
				return
			}
		}
		c.mu.Unlock()
		return
	}
}

// handle runs the connection's state machine for one report.
func (c *Conn) handle(st uint8, ev netpoll.Event) error {
	switch st {
	case stateConnecting:
		if ev&(netpoll.Write|netpoll.Err|netpoll.Hup) == 0 {
			return nil
		}
		soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return classify(err)
		}
		if soerr != 0 {
			return classify(unix.Errno(soerr))
		}
		return c.sendRequest()
	}
	if ev&netpoll.Write != 0 {
		c.mu.Lock()
		err := c.flushLocked()
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if ev&(netpoll.Read|netpoll.ReadHup|netpoll.Hup|netpoll.Err) == 0 {
		return nil
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	n, err := unix.Read(c.fd, buf)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return nil
		}
		return classify(err)
	}
	if n == 0 {
		return &FailError{Cause: CauseEOF}
	}
	c.now = time.Now().UnixNano()
	p := buf[:n]
	if st == stateHandshake {
		var err error
		if p, err = c.response(p); err != nil || p == nil {
			return err
		}
	}
	if err := c.rd.Feed(&c.e.wireCfg, p, (*frames)(c)); err != nil {
		var fe *FailError
		if errors.As(err, &fe) {
			return fe
		}
		return &FailError{Cause: CauseProtocol, Err: err}
	}
	return nil
}

// sendRequest writes the handshake request once the connect completed.
func (c *Conn) sendRequest() error {
	c.key = newKey()
	req := make([]byte, 0, len(c.head)+len(c.key)+4)
	req = append(req, c.head...)
	req = append(req, c.key[:]...)
	req = append(req, "\r\n\r\n"...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = stateHandshake
	c.wq = req
	return c.flushLocked()
}

// response collects the handshake response in p and checks it once whole.
// It returns the bytes that followed the headers (frames already sent by
// the server), nil with a nil error while the headers are incomplete.
func (c *Conn) response(p []byte) ([]byte, error) {
	c.hs = append(c.hs, p...)
	end := bytes.Index(c.hs, []byte("\r\n\r\n"))
	if end < 0 {
		if len(c.hs) > maxResponse {
			return nil, &FailError{Cause: CauseBadReply, Err: errors.New("response headers too long")}
		}
		return nil, nil
	}
	head := c.hs[:end+2]
	rest := c.hs[end+4:]
	line, fields, _ := bytes.Cut(head, []byte("\r\n"))
	proto, status, ok := bytes.Cut(line, []byte(" "))
	if !ok || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(status) < 3 {
		return nil, &FailError{Cause: CauseBadReply, Err: errors.New("bad status line")}
	}
	code, err := strconv.Atoi(string(status[:3]))
	if err != nil {
		return nil, &FailError{Cause: CauseBadReply, Err: errors.New("bad status line")}
	}
	if code != 101 {
		return nil, &FailError{Cause: statusCause(code)}
	}
	var accept []byte
	for len(fields) > 0 {
		var f []byte
		f, fields, _ = bytes.Cut(fields, []byte("\r\n"))
		name, val, ok := bytes.Cut(f, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Accept")) {
			accept = bytes.TrimSpace(val)
		}
	}
	if string(accept) != acceptFor(c.key[:]) {
		return nil, &FailError{Cause: CauseBadAccept}
	}
	c.opened = time.Now().UnixNano()
	c.e.wheel.Cancel(&c.timer)
	c.mu.Lock()
	c.state = stateOpen
	c.mu.Unlock()
	c.e.open.Add(1)
	out := append([]byte(nil), rest...)
	c.hs = nil
	c.h.Open(c)
	return out, nil
}

// fail ends the connection with err, unless it already ended.
func (c *Conn) fail(err error) { c.end(err) }

// end closes the connection now, or marks it for the task that owns it to
// close, and calls Closed once.
func (c *Conn) end(err error) {
	c.mu.Lock()
	if c.state >= stateClosing {
		c.mu.Unlock()
		return
	}
	wasOpen := c.state == stateOpen
	c.state = stateClosing
	c.failErr = err
	if wasOpen {
		c.e.open.Add(-1)
	}
	if c.busy {
		// The fd stays open until the task is done with it, so that it cannot
		// be reused under the task by a new connection.
		c.mu.Unlock()
		return
	}
	c.finishLocked()
	c.mu.Unlock()
	c.h.Closed(c, err)
}

// finishLocked releases the socket.
func (c *Conn) finishLocked() {
	c.state = stateClosed
	c.e.wheel.Cancel(&c.timer)
	_ = c.e.poller.Del(c.fd)
	_ = unix.Close(c.fd)
	c.wq = nil
	c.rd.Reset()
	c.hs = nil
}

// frames is the wire.Handler of a Conn, a distinct type so that Conn does
// not export the reader's callbacks.
type frames Conn

// Message implements wire.Handler.
func (f *frames) Message(op ws.OpCode, p []byte) error {
	c := (*Conn)(f)
	c.h.Message(c, op, p, c.now)
	return nil
}

// Control implements wire.Handler: pings are answered, a close is echoed
// and ends the connection.
func (f *frames) Control(op ws.OpCode, p []byte) error {
	c := (*Conn)(f)
	switch op {
	case ws.OpPing:
		if err := c.Send(ws.OpPong, p); err != nil && !errors.Is(err, ErrClosed) {
			return &FailError{Cause: CauseOther, Err: err}
		}
	case ws.OpClose:
		code, reason := wire.ParseClose(p)
		c.mu.Lock()
		if c.state == stateOpen {
			c.wq = wire.AppendMaskedClose(c.wq, maskKey(), code, "")
			_ = c.flushLocked()
		}
		c.mu.Unlock()
		return &FailError{Cause: CauseClosed, Err: &CloseError{Code: int(code), Reason: string(reason)}}
	}
	return nil
}
