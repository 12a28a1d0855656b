package netpoll

import (
	"sync"
	"sync/atomic"
	"time"
)

// Expirer is what a Timer calls when it fires. now is the wheel's clock in
// unix nanoseconds.
type Expirer interface{ Expire(now int64) }

// Timer is one deadline, embedded by value in the struct it belongs to so
// that a million connections do not mean a million runtime timers. Its zero
// value is unarmed. It is 48 bytes on 64-bit systems. A Timer belongs to one
// Wheel at a time.
type Timer struct {
	prev, next *Timer
	when       int64 // tick at which it is due
	e          Expirer
	state      int32
}

const (
	timerIdle int32 = iota
	timerArmed
	timerFiring // collected for firing, Expire not yet called
)

// Wheel fires Timers with the granularity of one tick, from one goroutine.
// A slot holds the timers whose due tick falls on it in any round, so
// deadlines longer than one turn of the wheel work too.
type Wheel struct {
	tick  time.Duration
	start time.Time

	mu    sync.Mutex
	slots []Timer // list heads
	cur   int64   // last tick processed
	n     int
	due   []*Timer // reused by the wheel goroutine

	now  atomic.Int64
	stop chan struct{}
	done chan struct{}
	once sync.Once
	run  sync.Once
}

// Defaults of NewWheel.
const (
	DefaultTick  = 100 * time.Millisecond
	DefaultSlots = 512
)

// NewWheel makes a wheel of slots slots advancing every tick; zero values
// pick DefaultTick and DefaultSlots. Deadlines are rounded up to a tick and
// never fire early.
func NewWheel(tick time.Duration, slots int) *Wheel {
	if tick <= 0 {
		tick = DefaultTick
	}
	if slots <= 0 {
		slots = DefaultSlots
	}
	w := &Wheel{
		tick:  tick,
		start: time.Now(),
		slots: make([]Timer, slots),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range w.slots {
		h := &w.slots[i]
		h.prev, h.next = h, h
	}
	w.now.Store(w.start.UnixNano())
	return w
}

// Start starts the ticking goroutine. Stop stops it.
func (w *Wheel) Start() {
	w.run.Do(func() { go w.loop() })
}

// Stop stops the ticking goroutine and waits for it; pending timers do not
// fire. Calling it twice, or without Start, is safe.
func (w *Wheel) Stop() {
	w.once.Do(func() { close(w.stop) })
	// Without a Start, this marks the loop as done, and a later Start is a no-op.
	w.run.Do(func() { close(w.done) })
	<-w.done
}

// Now is a coarse clock in unix nanoseconds, updated every tick: a cheap
// load for hot paths that need about now.
func (w *Wheel) Now() int64 { return w.now.Load() }

// Len is the number of armed timers.
func (w *Wheel) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Schedule arms t to call e.Expire once, no earlier than d from now. An
// armed timer is moved. It is safe from any goroutine, including from an
// Expire.
func (w *Wheel) Schedule(t *Timer, d time.Duration, e Expirer) {
	at := time.Since(w.start) + d
	when := int64((at + w.tick - 1) / w.tick)
	w.mu.Lock()
	if t.state == timerArmed {
		w.unlinkLocked(t)
	}
	if when <= w.cur {
		when = w.cur + 1
	}
	t.when, t.e, t.state = when, e, timerArmed
	h := &w.slots[when%int64(len(w.slots))]
	t.prev, t.next = h.prev, h
	h.prev.next = t
	h.prev = t
	w.n++
	w.mu.Unlock()
}

// Cancel disarms t. It reports whether t was armed; when it returns true,
// Expire will not be called for that arming.
func (w *Wheel) Cancel(t *Timer) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch t.state {
	case timerArmed:
		w.unlinkLocked(t)
		t.state, t.e = timerIdle, nil
		return true
	case timerFiring:
		t.state, t.e = timerIdle, nil
		return true
	}
	return false
}

func (w *Wheel) unlinkLocked(t *Timer) {
	t.prev.next = t.next
	t.next.prev = t.prev
	t.prev, t.next = nil, nil
	w.n--
}

func (w *Wheel) loop() {
	defer close(w.done)
	tk := time.NewTicker(w.tick)
	defer tk.Stop()
	for {
		select {
		case <-w.stop:
			return
		case now := <-tk.C:
			w.now.Store(now.UnixNano())
			w.advance(int64(now.Sub(w.start) / w.tick))
		}
	}
}

// advance processes every tick up to target; a late ticker catches up.
func (w *Wheel) advance(target int64) {
	for {
		w.mu.Lock()
		if w.cur >= target {
			w.mu.Unlock()
			return
		}
		w.cur++
		h := &w.slots[w.cur%int64(len(w.slots))]
		for t := h.next; t != h; {
			next := t.next
			if t.when <= w.cur {
				w.unlinkLocked(t)
				t.state = timerFiring
				w.due = append(w.due, t)
			}
			t = next
		}
		w.mu.Unlock()
		for i, t := range w.due {
			w.due[i] = nil
			w.mu.Lock()
			if t.state != timerFiring {
				// Cancelled or rescheduled since it was collected.
				w.mu.Unlock()
				continue
			}
			e := t.e
			t.state, t.e = timerIdle, nil
			w.mu.Unlock()
			e.Expire(w.now.Load())
		}
		w.due = w.due[:0]
	}
}
