package shard

import (
	"errors"
	"slices"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/netpoll"
	"github.com/shoal-gw/shoal/wire"
)

// maxIovec bounds the frames coalesced into one writev.
const maxIovec = 64

// A batch of fan-out frames (see deliver) lasts while bus messages wait in
// the inbox, for at most corkMaxMsgs of them or corkMaxDelay. Within it a
// connection's frames are written once it holds maxIovec of them or
// corkMaxBytes (at most a quarter of the outbound queue, so a batch alone
// never overflows a queue). The bounds are per connection because a member
// gets only its rooms' share of the messages: with many rooms, a batch
// bounded by messages alone would give each member a frame or two per
// syscall.
const (
	corkMaxMsgs  = 1024
	corkMaxDelay = 50 * time.Millisecond
	corkMaxBytes = 64 << 10
)

func (s *Shard) corkMaxBytes() int { return min(corkMaxBytes, s.cfg.MaxQueue/4) }

// deliver writes a fan-out frame to c from the dispatcher. While more bus
// messages wait in the inbox, the frame is only queued and c joins the
// batch; the batch is written when the inbox runs dry or the batch ends,
// one writev per connection for all of its frames instead of one write
// per frame. An idle gateway writes at once; a busy one spends far fewer
// syscalls per delivery, which is where fan-out time goes (on both ends of
// the socket: the reader wakes once per batch too).
func (s *Shard) deliver(c *conn, frame []byte) {
	if !s.cork {
		c.write(frame)
		return
	}
	c.mu.Lock()
	if c.state == stateOpen {
		c.enqueueLocked(frame)
		if !c.corked {
			c.corked = true
			s.corked = append(s.corked, c)
		}
		if len(c.out) >= maxIovec || c.outBytes >= s.corkMaxBytes() {
			c.flushLocked()
		}
	}
	c.mu.Unlock()
}

// countCork accounts a fan-out message in the batch.
func (s *Shard) countCork() {
	if s.cork {
		s.corkMsgs++
	}
}

// uncork writes the batch out.
func (s *Shard) uncork() {
	for i, c := range s.corked {
		c.mu.Lock()
		c.corked = false
		c.flushLocked()
		c.mu.Unlock()
		s.corked[i] = nil
	}
	s.corked = s.corked[:0]
	s.corkMsgs = 0
}

func timeDuration(ns int64) time.Duration { return time.Duration(ns) }

// write sends one frame to the connection. frame is shared and never
// modified (fan-out hands the same bytes to every member). When nothing is
// queued the frame goes straight to the socket from the calling goroutine;
// otherwise it joins the queue behind the frames already waiting, so a
// connection's frames leave in the order they were written.
//
// write never ends the connection itself (the caller may hold room or
// table locks); see LOCKS.md.
func (c *conn) write(frame []byte) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	if len(c.out) == 0 && !c.flushing && !c.waitOut && c.acquireLocked() {
		if c.tls != nil {
			var ok bool
			if frame, ok = c.sealLocked(frame); !ok {
				c.releaseLocked()
				c.mu.Unlock()
				return
			}
		}
		c.writeDirectLocked(frame)
	} else {
		c.enqueueLocked(frame)
		c.flushLocked()
	}
	c.mu.Unlock()
}

// writeDirectLocked is write's common case: nothing waits, so the frame is
// written without being queued, and an idle connection stays without a
// queue. The caller holds a reference on fd.
func (c *conn) writeDirectLocked(frame []byte) {
	c.flushing = true
	fd := int(c.fd)
	c.mu.Unlock()
	n, err := unix.Write(fd, frame)
	c.s.stats.writes.Add(1)
	c.mu.Lock()
	c.releaseLocked()
	c.flushing = false
	if n > 0 {
		c.s.stats.bytesOut.Add(uint64(n))
	} else {
		n = 0
	}
	switch {
	case n == len(frame):
		c.s.stats.framesOut.Add(1)
		if c.tls != nil {
			releaseSealed(frame)
		}
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		// The rest of this frame goes before anything queued meanwhile.
		c.out = append([][]byte{frame}, c.out...)
		if c.tls != nil {
			c.sealed++
		}
		c.outOff = int32(n)
		c.outBytes += len(frame) - n
	default:
		c.clearQueueLocked()
		if c.closeCode == 0 {
			c.closeCode = ws.StatusAbnormalClosure
		}
		c.scheduleEndLocked()
		return
	}
	if len(c.out) > 0 {
		c.flushLocked()
	}
}

// enqueueLocked adds a frame to the queue. If the queue would pass its
// bound, the service's slow-consumer policy decides: drop the oldest
// frames waiting (see dropOldestLocked), or drop everything waiting and
// close the connection with 1008. Either way a client that cannot keep up
// does not make the gateway hold unbounded memory, nor slow anyone else.
//
// A TLS connection queues frames as they are, like a plain one, and seals
// them only when they are handed to the socket (see sealQueuedLocked), so
// both policies drop frames that never took a sequence number of the TLS
// stream, which stays whole.
func (c *conn) enqueueLocked(frame []byte) {
	if len(c.out) > 0 && c.outBytes+len(frame) > c.s.cfg.MaxQueue {
		if c.route.slow == SlowDropOldest {
			if c.dropOldestLocked(frame) {
				c.out = append(c.out, frame)
				c.outBytes += len(frame)
			}
			return
		}
		c.s.stats.serverCloses[closeSlow].Add(1)
		keep := c.keptLocked()
		clear(c.out[keep:])
		c.out = c.out[:keep]
		c.outBytes = -int(c.outOff)
		for _, b := range c.out {
			c.outBytes += len(b)
		}
		c.beginCloseLocked(ws.StatusPolicyViolation, "outbound queue full: client too slow", afterShutdown)
		return
	}
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
}

// keptLocked is how many entries at the head of the queue must stay when
// frames are dropped: those a writev in progress holds, so that the bytes
// written are counted off the right frames; the frame half on the wire, so
// that the client can still parse what follows; and on a TLS connection
// every sealed record, since each took the next sequence number of the
// stream and the client's TLS would refuse a gap.
func (c *conn) keptLocked() int {
	keep := max(int(c.inflight), int(c.sealed))
	if c.outOff > 0 {
		keep = max(keep, 1)
	}
	return keep
}

// clearQueueLocked drops everything queued: the connection is ending.
func (c *conn) clearQueueLocked() {
	c.out, c.outBytes, c.outOff, c.sealed = nil, 0, 0, 0
}

// sealLocked encrypts a frame for a TLS connection. The frame may be
// shared (fan-out); the sealed bytes are the connection's own. On failure
// the connection is ended and ok is false.
func (c *conn) sealLocked(frame []byte) (sealed []byte, ok bool) {
	sealed, err := c.tls.Seal(sealBuf(acceptor.SealedLen(len(frame))), frame)
	if err != nil {
		c.s.log.Debug("TLS seal failed", "conn", c.cid, "err", err)
		c.clearQueueLocked()
		if c.closeCode == 0 {
			c.closeCode = ws.StatusAbnormalClosure
		}
		c.scheduleEndLocked()
		return nil, false
	}
	return sealed, true
}

// sealQueuedLocked seals a TLS connection's queued frames up to the k-th,
// in queue order, which is the order they go out in. The writer calls it
// for the frames it is about to write, so that a frame takes its sequence
// number only then, and those behind it can still be dropped. It reports
// false when sealing failed, which ends the connection.
func (c *conn) sealQueuedLocked(k int) bool {
	for int(c.sealed) < k {
		frame := c.out[c.sealed]
		rec, ok := c.sealLocked(frame)
		if !ok {
			return false
		}
		c.out[c.sealed] = rec
		c.outBytes += len(rec) - len(frame)
		c.sealed++
	}
	return true
}

// queueTLSOutputLocked queues what reading TLS produced (an alert, a key
// update) and writes it out.
func (c *conn) queueTLSOutputLocked() {
	out := c.tls.Output()
	if len(out) == 0 || c.state == stateDead {
		return
	}
	// TLS sealed it after the records queued and before the frames still
	// waiting to be sealed, so it goes out between them.
	c.out = slices.Insert(c.out, int(c.sealed), out)
	c.sealed++
	c.outBytes += len(out)
	c.flushLocked()
}

// beginCloseLocked queues a close frame with code and stops data going out.
func (c *conn) beginCloseLocked(code ws.StatusCode, reason string, after afterFlush) {
	if c.state != stateOpen {
		return
	}
	c.closeCode, c.closeReason = code, reason
	c.queueCloseLocked(wire.AppendClose(nil, code, reason), after)
}

// queueCloseLocked queues a prepared close frame, moves to closing, and
// arms the close deadline.
func (c *conn) queueCloseLocked(frame []byte, after afterFlush) {
	if c.tls != nil {
		// No data follows the close frame, so TLS's sending side ends
		// with it (close_notify). Both are sealed now, after what waits
		// ahead of them.
		if !c.sealQueuedLocked(len(c.out)) {
			return
		}
		var ok bool
		if frame, ok = c.sealLocked(frame); !ok {
			return
		}
	}
	c.state = stateClosing
	c.after = after
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
	if c.tls != nil {
		c.sealed++
		if cn := c.tls.CloseNotify(); len(cn) > 0 {
			c.out = append(c.out, cn)
			c.outBytes += len(cn)
			c.sealed++
		}
	}
	c.s.wheel.Schedule(&c.timer, c.s.cfg.CloseTimeout, c)
}

// flushLocked writes the queue out unless another goroutine is doing so
// or the socket is full. c.mu is held on entry and on return, but not
// during the syscalls.
func (c *conn) flushLocked() {
	if c.flushing || c.waitOut {
		return
	}
	c.flushing = true
	c.drainLocked()
}

// Run is the write-readiness task: the socket has room again.
func (t *flushTask) Run() {
	c := (*conn)(t)
	c.mu.Lock()
	c.drainLocked()
	c.mu.Unlock()
}

// drainLocked is the writer loop; the caller has set c.flushing.
func (c *conn) drainLocked() {
	var iov [maxIovec]unix.Iovec
	for len(c.out) > 0 && c.state != stateDead {
		k := min(len(c.out), maxIovec)
		if c.tls != nil && !c.sealQueuedLocked(k) {
			c.flushing = false
			return
		}
		if !c.acquireLocked() {
			break
		}
		total := 0
		for i := range k {
			b := c.out[i]
			if i == 0 {
				b = b[c.outOff:]
			}
			iov[i].Base = unsafe.SliceData(b)
			iov[i].SetLen(len(b))
			total += len(b)
		}
		fd := int(c.fd)
		c.inflight = int8(k)
		c.mu.Unlock()
		n, err := writev(fd, iov[:k])
		c.s.stats.writes.Add(1)
		c.mu.Lock()
		c.inflight = 0
		c.releaseLocked()
		if c.state == stateDead {
			// terminate dropped the queue while the lock was free.
			break
		}
		if n > 0 {
			c.consumeLocked(n)
			c.s.stats.bytesOut.Add(uint64(n))
		}
		switch {
		case err == nil && n == total:
			continue
		case err == nil, errors.Is(err, unix.EAGAIN):
			// The socket is full: wait for room without holding a goroutine.
			c.flushing = false
			c.waitOut = true
			c.armLocked(netpoll.Write)
			return
		case errors.Is(err, unix.EINTR):
			continue
		default:
			// The peer is gone (EPIPE, ECONNRESET): nothing more can be
			// delivered, so end the connection.
			c.flushing = false
			c.clearQueueLocked()
			if c.closeCode == 0 {
				c.closeCode = ws.StatusAbnormalClosure
			}
			c.scheduleEndLocked()
			return
		}
	}
	c.flushing = false
	if len(c.out) == 0 {
		c.out = nil // give the backing array back: idle connections hold no buffer
		c.outOff = 0
		c.afterCloseSentLocked()
	}
}

// consumeLocked drops n written bytes from the head of the queue.
func (c *conn) consumeLocked(n int) {
	c.outBytes -= n
	i := 0
	for n > 0 && i < len(c.out) {
		rest := len(c.out[i]) - int(c.outOff)
		if n < rest {
			c.outOff += int32(n)
			break
		}
		n -= rest
		if c.tls != nil {
			// Every entry written is a sealed record, the connection's own.
			releaseSealed(c.out[i])
		}
		c.out[i] = nil
		c.outOff = 0
		i++
	}
	c.out = c.out[i:]
	if c.tls != nil {
		c.sealed -= int32(i)
	}
	c.s.stats.framesOut.Add(uint64(i))
}

// afterCloseSentLocked runs once the queue holding a close frame is out.
func (c *conn) afterCloseSentLocked() {
	if c.state != stateClosing {
		return
	}
	switch c.after {
	case afterShutdown:
		c.after = afterNothing
		if !c.fdClosed {
			_ = unix.Shutdown(int(c.fd), unix.SHUT_WR)
		}
	case afterTerminate:
		c.after = afterNothing
		c.scheduleEndLocked()
	}
}

// writev writes iov to a non-blocking fd in one syscall.
func writev(fd int, iov []unix.Iovec) (int, error) {
	if len(iov) == 1 {
		return unix.Write(fd, unsafe.Slice(iov[0].Base, iov[0].Len))
	}
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
