package bench

import (
	"context"
	"time"
)

// Clock is the time source of a Pacer, so that tests drive the schedule
// without sleeping.
type Clock interface {
	// Now is the current time in unix nanoseconds.
	Now() int64
	// Sleep waits d, or less if ctx is done.
	Sleep(ctx context.Context, d time.Duration)
}

// SystemClock is the real Clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() int64 { return time.Now().UnixNano() }

// Sleep implements Clock.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Schedule is an open-loop schedule: event k is due at Start + k/Rate
// seconds, whatever happened to the events before it.
type Schedule struct {
	Start int64   // unix ns of event 0
	Rate  float64 // events per second
}

// Due is the time event k is due, in unix nanoseconds.
func (s Schedule) Due(k uint64) int64 {
	return s.Start + int64(float64(k)*1e9/s.Rate)
}

// DefaultLateAfter is how late a send may be before it counts as late: past
// it, the tool is not keeping its schedule and says so.
const DefaultLateAfter = 10 * time.Millisecond

// Pacer walks a Schedule, calling a send function for each event no
// earlier than its due time. A send that comes late (the pacer was
// descheduled, or a send blocked) does not shift later events: those that
// fell due meanwhile are sent at once, still carrying their own due time,
// so the delay shows in their latency instead of vanishing from it.
type Pacer struct {
	Clock    Clock
	Schedule Schedule
	// First and Step select the events this pacer sends: First, First+Step…
	// (Step 0 means 1), so that several pacers share one schedule.
	First, Step uint64
	// Limit stops before event Limit (0: no limit); End stops before the
	// first event due at or after End (0: no end).
	Limit uint64
	End   int64
	// LateAfter is the lateness counted as late; default DefaultLateAfter.
	LateAfter time.Duration
}

// PaceStats counts what a Pacer did.
type PaceStats struct {
	Sent      uint64
	Late      uint64 // sent more than LateAfter after due
	MaxLateNs int64
}

// Run paces events until the schedule ends or ctx is done. send gets the
// event number, its due time and the time it is sent, all in unix ns.
func (p *Pacer) Run(ctx context.Context, send func(k uint64, due, now int64)) PaceStats {
	var st PaceStats
	step := max(p.Step, 1)
	late := int64(p.LateAfter)
	if late <= 0 {
		late = int64(DefaultLateAfter)
	}
	now := p.Clock.Now()
	for k := p.First; p.Limit == 0 || k < p.Limit; k += step {
		due := p.Schedule.Due(k)
		if p.End != 0 && due >= p.End {
			break
		}
		if now < due {
			now = p.Clock.Now()
		}
		for now < due {
			if ctx.Err() != nil {
				return st
			}
			p.Clock.Sleep(ctx, time.Duration(due-now))
			now = p.Clock.Now()
		}
		if st.Sent&1023 == 0 && ctx.Err() != nil {
			return st
		}
		if d := now - due; d > late {
			st.Late++
			st.MaxLateNs = max(st.MaxLateNs, d)
		}
		send(k, due, now)
		st.Sent++
		now = p.Clock.Now()
	}
	return st
}
