package bench

import (
	"context"
	"testing"
	"time"
)

// fakeClock advances only when slept on, or when a test moves it.
type fakeClock struct{ now int64 }

func (c *fakeClock) Now() int64                               { return c.now }
func (c *fakeClock) Sleep(_ context.Context, d time.Duration) { c.now += int64(d) }

type sendRec struct {
	k        uint64
	due, now int64
}

func TestPacerEvenlySpaced(t *testing.T) {
	clk := &fakeClock{now: 1e9}
	p := Pacer{Clock: clk, Schedule: Schedule{Start: 1e9, Rate: 1000}, Limit: 100}
	var got []sendRec
	st := p.Run(context.Background(), func(k uint64, due, now int64) { got = append(got, sendRec{k, due, now}) })
	if st.Sent != 100 || len(got) != 100 || st.Late != 0 {
		t.Fatalf("sent %d (%d calls), late %d", st.Sent, len(got), st.Late)
	}
	for i, s := range got {
		if s.k != uint64(i) {
			t.Fatalf("event %d has number %d", i, s.k)
		}
		if want := int64(1e9) + int64(i)*int64(time.Millisecond); s.due != want {
			t.Fatalf("event %d due %d, want %d", i, s.due, want)
		}
		if s.now < s.due {
			t.Fatalf("event %d sent %dns early", i, s.due-s.now)
		}
	}
}

func TestPacerStepAndEnd(t *testing.T) {
	clk := &fakeClock{}
	p := Pacer{Clock: clk, Schedule: Schedule{Rate: 100}, First: 1, Step: 3, End: int64(time.Second)}
	var ks []uint64
	p.Run(context.Background(), func(k uint64, _, _ int64) { ks = append(ks, k) })
	// Events 1, 4, ... 97 are due before 1s.
	if len(ks) != 33 || ks[0] != 1 || ks[1] != 4 || ks[32] != 97 {
		t.Fatalf("events %v", ks)
	}
}

// TestPacerLateSender stalls one send by 50ms: the events that fell due
// meanwhile go out at once, keep their own due times, and their latency,
// counted from the due time carried in the payload, includes the stall.
func TestPacerLateSender(t *testing.T) {
	clk := &fakeClock{}
	p := Pacer{Clock: clk, Schedule: Schedule{Rate: 1000}, Limit: 100}
	var got []sendRec
	buf := make([]byte, 64)
	var lat []int64
	st := p.Run(context.Background(), func(k uint64, due, now int64) {
		got = append(got, sendRec{k, due, now})
		Payload{Time: due, Sender: 7, Seq: k}.Put(buf)
		if k == 10 {
			clk.now += int64(50 * time.Millisecond) // this send blocked
		}
		// An echo arrives 100µs after the actual send.
		pl, ok := ParsePayload(buf)
		if !ok || pl.Seq != k || pl.Sender != 7 {
			t.Fatalf("payload %+v", pl)
		}
		lat = append(lat, pl.Latency(clk.now+100_000))
	})
	if st.Sent != 100 {
		t.Fatalf("sent %d", st.Sent)
	}
	for i, s := range got {
		if want := int64(i) * int64(time.Millisecond); s.due != want {
			t.Fatalf("event %d due %d, want %d: a stall shifted the schedule", i, s.due, want)
		}
	}
	// Events 11..59 were due while event 10 blocked; they left at 60ms.
	if got[11].now != int64(60*time.Millisecond) || got[59].now != got[11].now {
		t.Errorf("events after the stall sent at %d and %d, want both at 60ms", got[11].now, got[59].now)
	}
	if want := int64(49*time.Millisecond + 100*time.Microsecond); lat[11] != want {
		t.Errorf("latency of event 11 = %d, want %d (from its due time)", lat[11], want)
	}
	if lat[70] != 100_000 {
		t.Errorf("latency of event 70 = %d, want 100µs once back on schedule", lat[70])
	}
	// Late by more than 10ms: events 11..49 (event 50 is exactly 10ms late).
	if st.Late != 39 {
		t.Errorf("late %d, want 39", st.Late)
	}
	if st.MaxLateNs != int64(49*time.Millisecond) {
		t.Errorf("max late %d", st.MaxLateNs)
	}
}

func TestShare(t *testing.T) {
	total := 0
	next := 0
	for i := range 3 {
		off, n := Share(10, i, 3)
		if off != next {
			t.Fatalf("part %d at %d, want %d", i, off, next)
		}
		next += n
		total += n
	}
	if total != 10 {
		t.Fatalf("parts sum to %d", total)
	}
	if _, n := Share(10, 0, 3); n != 4 {
		t.Errorf("first part %d, want 4", n)
	}
}

func TestSeqTracker(t *testing.T) {
	var tr SeqTracker
	for _, s := range []uint64{0, 1, 2, 5, 5, 6, 3} {
		tr.See(s)
	}
	if tr.Next != 7 || tr.Gaps != 2 || tr.Dups != 2 || tr.Distinct() != 5 {
		t.Fatalf("%+v distinct %d", tr, tr.Distinct())
	}
}
