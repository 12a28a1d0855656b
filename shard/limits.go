package shard

import (
	"fmt"
	"strconv"
	"time"

	"github.com/shoal-gw/shoal/bus"
)

// SlowPolicy is what a shard does with a client whose outbound queue
// would pass Config.MaxQueue.
type SlowPolicy uint8

const (
	// SlowClose closes the client with 1008: whatever it has not read is
	// lost to it, and it reconnects and catches up in the service's own
	// way. The default, and the choice when every message matters.
	SlowClose SlowPolicy = iota
	// SlowDropOldest drops the oldest whole data frames waiting until the
	// new one fits, and the service hears how many in a dropped event: for
	// a feed where the latest message supersedes the older ones (a ticker).
	SlowDropOldest
)

// String returns the policy's name on the command line.
func (p SlowPolicy) String() string {
	switch p {
	case SlowClose:
		return "close"
	case SlowDropOldest:
		return "drop-oldest"
	}
	return "slowpolicy(" + strconv.Itoa(int(p)) + ")"
}

// ParseSlowPolicy reads "close" or "drop-oldest".
func ParseSlowPolicy(s string) (SlowPolicy, error) {
	switch s {
	case "close":
		return SlowClose, nil
	case "drop-oldest":
		return SlowDropOldest, nil
	}
	return 0, fmt.Errorf("shard: slow-consumer policy %q: want close or drop-oldest", s)
}

const (
	// reportInterval spaces a connection's dropped events, so that a flood
	// of drops is not a flood of events: the first drop is reported at
	// once, later ones in one count per interval.
	reportInterval = time.Second
	// floodWindow is the window of Config.MaxMessageDrops.
	floodWindow = 10 * time.Second
)

// dropState is what a connection keeps once the shard dropped one of its
// messages: the counts its service has not heard yet, and its flood
// window. It is allocated at the first drop, so that a client that never
// loses a message costs one pointer. Guarded by conn.mu.
type dropState struct {
	unreported [numDropReasons]uint32
	lastReport int64 // wheel time of the last report; 0: none yet
	floodStart int64 // start of the flood window
	floodDrops uint32
	queued     bool // a reportTask waits on the pool
	reporting  bool // a reportTask publishes, without conn.mu
	armed      bool // conn.timer is set for the next report
	// closeOwed: terminate ran while a report was being published, and
	// left the close event to the reporter, so that it comes last.
	closeOwed bool
}

func (c *conn) dropStateLocked() *dropState {
	if c.drops == nil {
		c.drops = &dropState{}
	}
	return c.drops
}

// dropInboundLocked accounts a client message refused by its rate limit
// and reports whether the client is flooding (see floodLocked).
func (c *conn) dropInboundLocked() (flooding bool) {
	flooding = c.floodLocked()
	c.noteDropLocked(dropRateLimit, 1)
	return flooding
}

// floodLocked counts a frame refused by the client's rate limit in its
// flood window and reports whether the client is flooding: past
// MaxMessageDrops refusals within the window.
func (c *conn) floodLocked() bool {
	d := c.dropStateLocked()
	now := c.s.wheel.Now()
	if now-d.floodStart >= int64(floodWindow) {
		d.floodStart, d.floodDrops = now, 0
	}
	d.floodDrops++
	return c.s.cfg.MaxMessageDrops > 0 && d.floodDrops > uint32(c.s.cfg.MaxMessageDrops)
}

// dropOldestLocked makes room for frame in a full queue under the
// drop-oldest policy: whole data frames go, oldest first, until it fits.
// What stays: the head of the queue that keptLocked names, and control
// frames, which are small and which the peer's side of the protocol waits
// for. A control frame is queued as it is, passing the bound by at most
// 127 bytes. A data frame that would not fit even with every other data
// frame gone is the one dropped, and the queue is left alone. It reports
// whether frame is to be queued.
func (c *conn) dropOldestLocked(frame []byte) bool {
	if isControl(frame) {
		return true
	}
	keep := c.keptLocked()
	need := c.outBytes + len(frame) - c.s.cfg.MaxQueue
	droppable := 0
	for _, b := range c.out[keep:] {
		if !isControl(b) {
			droppable += len(b)
		}
	}
	if droppable < need {
		c.noteDropLocked(dropQueueFull, 1)
		return false
	}
	var n uint32
	j := keep
	for i := keep; i < len(c.out); i++ {
		b := c.out[i]
		if need > 0 && !isControl(b) {
			need -= len(b)
			c.outBytes -= len(b)
			n++
			continue
		}
		c.out[j] = b
		j++
	}
	clear(c.out[j:])
	c.out = c.out[:j]
	c.noteDropLocked(dropQueueFull, n)
	return true
}

// isControl reports whether a queued frame is a control frame; queued
// frames are whole, so the opcode is in the first byte.
func isControl(frame []byte) bool { return len(frame) > 0 && frame[0]&0x08 != 0 }

// noteDropLocked counts n dropped messages and makes sure the service
// hears of them.
func (c *conn) noteDropLocked(r dropReason, n uint32) {
	d := c.dropStateLocked()
	d.unreported[r] += n
	c.s.stats.dropped[r].Add(uint64(n))
	c.scheduleReportLocked()
}

// scheduleReportLocked queues a report now if none was made within the
// last reportInterval, or else sets the connection's timer for when one
// is due. A report in flight looks again when it is done, and terminate
// reports whatever is left, so neither needs more here.
func (c *conn) scheduleReportLocked() {
	d := c.drops
	if d.queued || d.reporting || c.state != stateOpen {
		return
	}
	now := c.s.wheel.Now()
	due := d.lastReport + int64(reportInterval)
	if d.lastReport != 0 && now < due {
		// The timer is the connection's keepalive timer: firing early
		// costs Expire nothing, it sets the keepalive deadline again. A
		// failed connection's timer is its close; the close reports.
		if !d.armed && !c.failed {
			d.armed = true
			c.s.wheel.Schedule(&c.timer, timeDuration(due-now), c)
		}
		return
	}
	d.armed = false
	d.queued = true
	if !c.s.pool.TrySchedule((*reportTask)(c)) {
		// The pool is saturated: try again on the next tick.
		d.queued = false
		if !c.failed {
			d.armed = true
			c.s.wheel.Schedule(&c.timer, 0, c)
		}
	}
}

// reportDueLocked is the timer's part in reporting: it queues a report
// that is due, or returns how long until the one waiting is.
func (c *conn) reportDueLocked(now int64) (wait time.Duration, ok bool) {
	d := c.drops
	if d == nil || !d.armed {
		return 0, false
	}
	if due := d.lastReport + int64(reportInterval); now < due {
		return timeDuration(due - now), true
	}
	d.armed = false
	c.scheduleReportLocked()
	if d.armed {
		return 0, true // the pool is saturated: the next tick tries again
	}
	return 0, false
}

// takeLocked returns the unreported counts and clears them.
func (d *dropState) takeLocked() [numDropReasons]uint32 {
	n := d.unreported
	d.unreported = [numDropReasons]uint32{}
	return n
}

func (d *dropState) pendingLocked() bool {
	for _, n := range d.unreported {
		if n > 0 {
			return true
		}
	}
	return false
}

// Run publishes a connection's dropped events. Publishing happens without
// conn.mu (it may wait on the bus); a terminate meanwhile leaves its close
// event to this task, so that nothing follows the close event.
func (t *reportTask) Run() {
	c := (*conn)(t)
	s := c.s
	c.mu.Lock()
	d := c.drops
	d.queued = false
	if c.state == stateDead {
		// terminate reported what was left.
		c.mu.Unlock()
		return
	}
	counts := d.takeLocked()
	d.reporting = true
	d.lastReport = s.wheel.Now()
	user := c.user
	c.mu.Unlock()

	s.publishDropped(c, user, counts)

	c.mu.Lock()
	d.reporting = false
	if d.closeOwed {
		rest := d.takeLocked()
		user, code, reason := c.user, c.closeCode, c.closeReason
		c.mu.Unlock()
		s.publishDropped(c, user, rest)
		if err := s.publishClose(c, user, uint16(code), reason); err != nil {
			s.stats.busErrors.Add(1)
		}
		return
	}
	if d.pendingLocked() {
		c.scheduleReportLocked()
	}
	c.mu.Unlock()
}

// publishDropped sends one dropped event per reason with a count.
func (s *Shard) publishDropped(c *conn, user string, counts [numDropReasons]uint32) {
	for r, n := range counts {
		if n == 0 {
			continue
		}
		m := s.event(c.route.subject, eventDropped, c.cid, user)
		m.Header[bus.HeaderDropReason] = []string{dropReasonNames[r]}
		m.Header[bus.HeaderDropCount] = []string{strconv.FormatUint(uint64(n), 10)}
		if err := s.publish(m); err != nil {
			s.stats.busErrors.Add(1)
		}
	}
}
