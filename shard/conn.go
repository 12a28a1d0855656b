package shard

import (
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/netpoll"
	"github.com/shoal-gw/shoal/wire"
)

type connState uint8

const (
	// stateOpen: frames flow both ways.
	stateOpen connState = iota
	// stateClosing: a close frame is queued or sent; no data goes out any
	// more, and the connection ends when the peer answers, hangs up, or
	// the close deadline passes.
	stateClosing
	// stateDead: out of the tables; the fd is closed once no goroutine
	// uses it.
	stateDead
)

// afterFlush is what happens once the queue holding a close frame drains.
type afterFlush uint8

const (
	afterNothing afterFlush = iota
	// afterShutdown half-closes the socket: the peer reads our close frame
	// and then EOF, answers with its own close and hangs up.
	afterShutdown
	// afterTerminate ends the connection: we were answering the peer's
	// close, so the handshake is complete and the server closes first.
	afterTerminate
)

// conn is one WebSocket connection. It is the unit of memory that the
// gateway holds hundreds of thousands of, so every field earns its place:
// no buffer is kept between reads, and the outbound queue is nil unless the
// socket is full.
type conn struct {
	s      *Shard
	id     uint64
	cid    string // "<shard>.<id>", the Shoal-Conn header
	route  *route
	remote netip.AddrPort

	// timer drives ping, idle and close deadlines from the shard's wheel.
	timer netpoll.Timer
	// lastRead is the wheel clock at the last bytes read.
	lastRead atomic.Int64

	// rd is used only by the goroutine running the read task; one-shot
	// readiness guarantees there is at most one.
	rd wire.Reader
	// tls is the TLS layer on a TLS port, nil otherwise. Every call on it
	// is made under mu: reads may produce output that must be ordered
	// with the records writes seal.
	tls *acceptor.TLSConn

	mu        sync.Mutex
	fd        int32
	state     connState
	fdClosed  bool
	failed    bool          // the reader hit a protocol error: discard input
	peerClose bool          // the peer's close frame arrived
	flushing  bool          // a goroutine is writing the queue out
	waitOut   bool          // waiting for write readiness
	corked    bool          // in the dispatcher's batch of connections to flush
	after     afterFlush    // once the queued close frame is out
	interest  netpoll.Event // armed one-shot interest
	refs      int16         // goroutines inside a syscall on fd
	inflight  int8          // queued frames handed to the writev in progress
	// deflate is permessage-deflate's window bits, 0 when not negotiated;
	// set before the connection is published and never changed, so read
	// without mu. It sits here because the padding has room for it.
	deflate     uint8
	closeCode   ws.StatusCode // reported in the close event
	closeReason string
	msgBucket   int64      // the MaxMessageRate bucket (netpoll.Rate)
	drops       *dropState // nil until the shard drops a message of this connection
	outOff      int32      // bytes of out[0] already written
	sealed      int32      // TLS: out[:sealed] are sealed records, the rest frames to seal
	outBytes    int        // bytes queued
	out         [][]byte   // frames waiting for the socket; nil when empty
	user        string
	rooms       []*room // rooms joined; guarded by Shard.roomsMu, not mu
}

// Task views of a conn, so that scheduling one on the pool is a pointer
// conversion and not an allocation.
type (
	readTask   conn
	flushTask  conn
	endTask    conn
	reportTask conn
)

func (t *endTask) Run() { (*conn)(t).terminate() }

// errStopReading ends Feed once the peer's close frame was handled.
var errStopReading = errors.New("shard: close frame received")

// errFlooding ends a connection that keeps sending past its rate limit.
var errFlooding = errors.New("shard: message rate limit exceeded")

// acquireLocked takes a reference on fd for a syscall made without c.mu.
func (c *conn) acquireLocked() bool {
	if c.fdClosed {
		return false
	}
	c.refs++
	return true
}

// releaseLocked drops a reference; the last one out of a dead connection
// closes its fd, so that no syscall ever sees a reused descriptor number.
func (c *conn) releaseLocked() {
	c.refs--
	if c.refs == 0 && c.state == stateDead && !c.fdClosed {
		c.fdClosed = true
		unix.Close(int(c.fd))
	}
}

// armLocked adds interest and re-arms the one-shot registration.
func (c *conn) armLocked(ev netpoll.Event) {
	if c.state == stateDead {
		return
	}
	c.interest |= ev
	if err := c.s.poller.Mod(int(c.fd), c.interest|netpoll.OneShot); err != nil {
		c.s.log.Debug("re-arm failed", "conn", c.cid, "err", err)
		c.scheduleEndLocked()
	}
}

// scheduleEndLocked ends the connection from a pool goroutine: the caller
// may hold room or table locks that terminate needs.
func (c *conn) scheduleEndLocked() {
	if c.state == stateDead {
		return
	}
	if c.state == stateOpen {
		c.state = stateClosing
		if c.closeCode == 0 {
			c.closeCode = ws.StatusAbnormalClosure
		}
	}
	if !c.s.pool.TrySchedule((*endTask)(c)) {
		// The pool is saturated; the close deadline ends it instead.
		c.s.wheel.Schedule(&c.timer, 0, c)
	}
}

// onEvent runs on the poller goroutine. A one-shot event disarms the whole
// registration, so whatever interest did not fire is armed again here.
// With one P the read runs right here (see Shard.inlineReads) unless the
// dispatcher is behind; TLS reads stay on the pool, where their cost was
// measured.
func (c *conn) onEvent(ev netpoll.Event) {
	if ev&netpoll.Closed != 0 {
		return
	}
	c.mu.Lock()
	if c.state == stateDead {
		c.mu.Unlock()
		return
	}
	armed := c.interest
	c.interest = 0
	trouble := ev&(netpoll.Hup|netpoll.Err) != 0
	read := armed&netpoll.Read != 0 && (ev&(netpoll.Read|netpoll.ReadHup) != 0 || trouble)
	write := armed&netpoll.Write != 0 && (ev&netpoll.Write != 0 || trouble)
	rest := armed
	if read {
		rest &^= netpoll.Read
	}
	if write {
		rest &^= netpoll.Write
		c.waitOut = false
		c.flushing = true
	}
	if rest != 0 {
		c.armLocked(rest)
	}
	inline := read && c.s.inlineReads && c.tls == nil && len(c.s.inbox) < inlineInbox
	c.mu.Unlock()
	switch {
	case inline:
		(*readTask)(c).Run()
	case read:
		c.s.schedule((*readTask)(c))
	}
	if write {
		c.s.schedule((*flushTask)(c))
	}
}

// Run reads what the socket holds and feeds it to the frame reader.
func (t *readTask) Run() {
	c := (*conn)(t)
	s := c.s
	c.mu.Lock()
	if c.state == stateDead || !c.acquireLocked() {
		c.mu.Unlock()
		return
	}
	discard := c.failed
	c.mu.Unlock()

	s.awaitInbox()
	bp := s.readBufs.Get().(*[]byte)
	buf := *bp
	var (
		eof   bool
		ferr  error
		bytes int
		plain []byte
	)
	if c.tls != nil {
		// Ciphertext in one half, what it decrypts to in the other: a
		// record's plaintext is at most 16 KiB.
		buf, plain = buf[:len(buf)/2], buf[len(buf)/2:]
	}
	for range maxReadsPerEvent {
		n, err := unix.Read(int(c.fd), buf)
		if n > 0 {
			bytes += n
			switch {
			case discard:
			case c.tls != nil:
				ferr, eof = c.readTLS(buf[:n], plain)
			default:
				ferr = c.rd.Feed(c.wireConfig(), buf[:n], c)
			}
			if ferr != nil || eof {
				break
			}
			if n < len(buf) {
				// Most likely drained; if not, the level-triggered re-arm
				// below brings us back, which is fairer to other sockets.
				break
			}
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		eof = n == 0 || !errors.Is(err, unix.EAGAIN)
		break
	}
	s.readBufs.Put(bp)
	if bytes > 0 {
		c.lastRead.Store(s.wheel.Now())
		s.stats.bytesIn.Add(uint64(bytes))
	}

	c.mu.Lock()
	c.releaseLocked()
	switch {
	case c.state == stateDead:
		c.mu.Unlock()
	case ferr != nil:
		c.mu.Unlock()
		c.readFailed(ferr)
	case eof:
		if !c.peerClose && c.closeCode == 0 {
			c.closeCode = ws.StatusAbnormalClosure
		}
		c.mu.Unlock()
		c.terminate()
	default:
		c.armLocked(netpoll.Read)
		c.mu.Unlock()
	}
}

// readTLS decrypts ciphertext read from the socket (none: only what TLS
// holds already) into plain, record by record, and feeds the frame
// reader. eof reports that the peer ended TLS (close_notify) or broke it.
func (c *conn) readTLS(ct, plain []byte) (ferr error, eof bool) {
	c.mu.Lock()
	c.tls.Feed(ct)
	for {
		n, err := c.tls.Read(plain)
		c.queueTLSOutputLocked()
		c.mu.Unlock()
		if n > 0 {
			if ferr = c.rd.Feed(c.wireConfig(), plain[:n], c); ferr != nil {
				c.mu.Lock()
				c.tls.Feed(nil) // the rest is discarded: ct is the caller's
				c.mu.Unlock()
				return ferr, false
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, acceptor.ErrWantRead):
			return nil, false
		case errors.Is(err, io.EOF):
			return nil, true
		default:
			c.s.log.Debug("TLS read failed", "conn", c.cid, "err", err)
			return nil, true
		}
		c.mu.Lock()
	}
}

// wireConfig is the frame reader's configuration: compressed messages are
// read only where permessage-deflate was negotiated.
func (c *conn) wireConfig() *wire.Config {
	if c.deflate != 0 {
		return &c.s.wireDeflate
	}
	return &c.s.wireCfg
}

// readFailed handles what stopped Feed.
func (c *conn) readFailed(err error) {
	var ce *wire.CloseError
	switch {
	case errors.Is(err, errStopReading):
		// The close handshake is under way or done; see Control.
	case errors.As(err, &ce):
		switch ce.Code {
		case ws.StatusMessageTooBig:
			c.s.stats.serverCloses[closeTooBig].Add(1)
		case ws.StatusInvalidFramePayloadData:
			c.s.stats.serverCloses[closeUTF8].Add(1)
		default:
			c.s.stats.serverCloses[closeProtocol].Add(1)
		}
		c.fail(ce.Code, ce.Reason)
	case errors.Is(err, errFlooding):
		c.s.stats.serverCloses[closeFlood].Add(1)
		c.fail(ws.StatusPolicyViolation, "message rate limit exceeded")
	default:
		// The bus refused the message: tell the client to come back
		// rather than lose its messages silently.
		c.s.stats.busErrors.Add(1)
		c.s.stats.serverCloses[closeBus].Add(1)
		c.fail(ws.StatusCode(1013), "bus unavailable, try again later")
	}
}

// fail starts a close with code after the reader stopped; input is
// discarded from now on, since the stream can no longer be parsed.
//
// The close frame waits one tick of the wheel: the messages the client sent
// before the violation are on their way through the bus, and what the
// service answers to them still reaches the client before the close.
func (c *conn) fail(code ws.StatusCode, reason string) {
	c.mu.Lock()
	if c.state == stateOpen && !c.failed {
		c.failed = true
		c.closeCode, c.closeReason = code, reason
		c.s.wheel.Schedule(&c.timer, 0, c)
	}
	c.armLocked(netpoll.Read) // to see the peer's EOF
	c.mu.Unlock()
}

// Message implements wire.Handler: a complete data message from the client.
func (c *conn) Message(op ws.OpCode, p []byte) error {
	s := c.s
	s.stats.messagesIn.Add(1)
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return nil
	}
	if !s.msgRate.Take(&c.msgBucket, s.wheel.Now()) {
		// Dropped, and the service told: a client that sends too fast
		// loses its excess, not its connection, unless it keeps at it.
		flooding := c.dropInboundLocked()
		c.mu.Unlock()
		if flooding {
			return errFlooding
		}
		return nil
	}
	user := c.user
	c.mu.Unlock()
	return s.publishMessage(c, user, op, p)
}

// Control implements wire.Handler: ping, pong and close frames.
func (c *conn) Control(op ws.OpCode, p []byte) error {
	c.s.stats.controlIn.Add(1)
	switch op {
	case ws.OpPing:
		// A ping costs a write, so pings spend the message rate too: one
		// past it gets no pong and counts towards flooding, but is not
		// reported to the service, which never sees pings.
		c.mu.Lock()
		ok := c.s.msgRate.Take(&c.msgBucket, c.s.wheel.Now())
		flooding := !ok && c.floodLocked()
		c.mu.Unlock()
		if flooding {
			return errFlooding
		}
		if ok {
			c.write(wire.AppendFrame(nil, ws.OpPong, true, p))
		}
	case ws.OpClose:
		code, reason := wire.ParseClose(p)
		c.mu.Lock()
		c.peerClose = true
		if c.state == stateOpen {
			c.closeCode, c.closeReason = code, string(reason)
			// Echo the code (none if none came), then close: the server
			// closes the TCP connection first (RFC 6455, 7.1.1).
			var echo []byte
			if code == ws.StatusNoStatusRcvd {
				echo = wire.AppendFrame(nil, ws.OpClose, true, nil)
			} else {
				echo = wire.AppendClose(nil, code, string(reason))
			}
			c.queueCloseLocked(echo, afterTerminate)
			c.flushLocked()
			c.mu.Unlock()
			return errStopReading
		}
		// Our close was answered: the handshake is complete.
		c.mu.Unlock()
		c.terminate()
		return errStopReading
	}
	return nil
}

// Expire implements netpoll.Expirer: keepalive and deadlines.
func (c *conn) Expire(now int64) {
	s := c.s
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateDead:
		return
	case stateClosing:
		// The close deadline passed: stop waiting for the peer.
		c.scheduleEndLocked()
		return
	}
	if c.failed {
		c.beginCloseLocked(c.closeCode, c.closeReason, afterShutdown)
		c.flushLocked()
		return
	}
	idle := now - c.lastRead.Load()
	var next time.Duration
	switch {
	case idle >= int64(s.cfg.IdleTimeout):
		s.stats.serverCloses[closeIdle].Add(1)
		c.beginCloseLocked(ws.StatusGoingAway, "idle timeout", afterShutdown)
		c.flushLocked()
		return
	case idle >= int64(s.cfg.PingInterval):
		c.enqueueLocked(s.pingFrame)
		c.flushLocked()
		if c.state != stateOpen {
			return // the ping overflowed the queue: closing
		}
		next = min(s.cfg.PingInterval, s.cfg.IdleTimeout-timeDuration(idle))
	default:
		next = s.cfg.PingInterval - timeDuration(idle)
	}
	// The timer also brings the next dropped event when it is due.
	if wait, ok := c.reportDueLocked(now); ok {
		next = min(next, wait)
	}
	s.wheel.Schedule(&c.timer, next, c)
}
