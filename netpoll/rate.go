package netpoll

import (
	"sync/atomic"
	"time"
)

// Rate is a token bucket whose whole state is one int64 per bucket, so
// that a limit on each of a million connections costs 8 bytes apiece and
// no timer: the generic cell rate algorithm. A bucket's state is the
// theoretical arrival time of its next event, in nanoseconds on a clock
// the caller chooses (the Wheel's Now on hot paths); a bucket whose state
// is 0 is full. Tokens come back at a steady pace: the bucket refills by
// one every second/perSecond, and holds at most burst.
//
// A Rate holds no state of its own and is safe to share; its zero value
// allows everything.
type Rate struct {
	interval int64 // nanoseconds per token
	window   int64 // interval * burst: how far ahead of now a bucket may run
}

// NewRate returns a Rate of perSecond tokens per second with room for
// burst of them (at least 1). perSecond <= 0 gives the zero Rate.
func NewRate(perSecond, burst int) Rate {
	if perSecond <= 0 {
		return Rate{}
	}
	interval := max(int64(time.Second)/int64(perSecond), 1)
	burst = min(max(burst, 1), 1<<31)
	return Rate{interval: interval, window: interval * int64(burst)}
}

// On reports whether r limits anything.
func (r Rate) On() bool { return r.interval > 0 }

// Take spends a token of the bucket *tat at now. It reports false when
// the bucket is empty, and then leaves it as it was: refused events cost
// nothing, so a client sending twice as fast as allowed still gets the
// allowed rate through.
func (r Rate) Take(tat *int64, now int64) bool {
	if r.interval == 0 {
		return true
	}
	t := max(*tat, now) + r.interval
	if t-now > r.window {
		return false
	}
	*tat = t
	return true
}

// TakeShared is Take on a bucket that several goroutines spend from. When
// the bucket is empty it also returns how long until a token is back.
func (r Rate) TakeShared(tat *atomic.Int64, now int64) (ok bool, wait time.Duration) {
	if r.interval == 0 {
		return true, 0
	}
	for {
		old := tat.Load()
		t := max(old, now) + r.interval
		if t-now > r.window {
			return false, time.Duration(t - now - r.window)
		}
		if tat.CompareAndSwap(old, t) {
			return true, 0
		}
	}
}
