package shard

import (
	"errors"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/netpoll"
	"github.com/shoal-gw/shoal/wire"
)

// maxIovec bounds the frames coalesced into one writev.
const maxIovec = 64

// A batch of fan-out frames (see deliver) is written once it holds
// corkMaxMsgs bus messages, or corkMaxBytes of frames (at most a quarter
// of the outbound queue, so a batch alone never overflows a queue).
const (
	corkMaxMsgs  = maxIovec / 2
	corkMaxBytes = 64 << 10
)

func (s *Shard) corkMaxBytes() int { return min(corkMaxBytes, s.cfg.MaxQueue/4) }

// deliver writes a fan-out frame to c from the dispatcher. While more bus
// messages wait in the inbox, the frame is only queued and c joins the
// batch; the batch is written when the inbox runs dry or the batch is
// full, one writev per connection for all of its frames instead of one
// write per frame. An idle gateway writes at once; a busy one spends far
// fewer syscalls per delivery, which is where fan-out time goes.
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
	}
	c.mu.Unlock()
}

// countCork accounts a fan-out frame in the batch.
func (s *Shard) countCork(frame []byte) {
	if s.cork {
		s.corkMsgs++
		s.corkBytes += len(frame)
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
	s.corkMsgs, s.corkBytes = 0, 0
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
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		// The rest of this frame goes before anything queued meanwhile.
		c.out = append([][]byte{frame}, c.out...)
		c.outOff = int32(n)
		c.outBytes += len(frame) - n
	default:
		c.out, c.outBytes, c.outOff = nil, 0, 0
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
		// Frames a writev in progress holds, and the frame half on the
		// wire, must stay: the first so that the bytes written are counted
		// off the right frames, the second so that the client can still
		// parse what follows.
		keep := int(c.inflight)
		if c.outOff > 0 {
			keep = max(keep, 1)
		}
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
	c.state = stateClosing
	c.after = after
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
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
		if !c.acquireLocked() {
			break
		}
		k := min(len(c.out), maxIovec)
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
			c.out, c.outBytes, c.outOff = nil, 0, 0
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
		c.out[i] = nil
		c.outOff = 0
		i++
	}
	c.out = c.out[i:]
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
