package netpoll

import (
	"sync"
	"testing"
	"time"
)

type fire struct {
	ch chan int64
}

func (f *fire) Expire(now int64) { f.ch <- now }

func newWheel(t testing.TB, tick time.Duration, slots int) *Wheel {
	t.Helper()
	w := NewWheel(tick, slots)
	w.Start()
	t.Cleanup(w.Stop)
	return w
}

func TestWheelFiresNotEarly(t *testing.T) {
	w := newWheel(t, 5*time.Millisecond, 8)
	f := &fire{ch: make(chan int64, 4)}
	var tm Timer
	for _, d := range []time.Duration{0, 3 * time.Millisecond, 20 * time.Millisecond, 130 * time.Millisecond} {
		start := time.Now()
		w.Schedule(&tm, d, f)
		select {
		case <-f.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("timer of %v did not fire", d)
		}
		// 130ms is several turns of an 8-slot wheel of 5ms ticks.
		if got := time.Since(start); got < d {
			t.Fatalf("timer of %v fired after %v", d, got)
		}
		if w.Len() != 0 {
			t.Fatalf("Len %d after firing", w.Len())
		}
	}
}

func TestWheelOrderAndReschedule(t *testing.T) {
	w := newWheel(t, 5*time.Millisecond, 16)
	ch := make(chan int, 3)
	var tms [3]Timer
	exps := make([]*orderExp, 3)
	for i := range exps {
		exps[i] = &orderExp{i: i, ch: ch}
	}
	w.Schedule(&tms[0], 60*time.Millisecond, exps[0])
	w.Schedule(&tms[1], 20*time.Millisecond, exps[1])
	w.Schedule(&tms[2], 200*time.Millisecond, exps[2])
	// Moving timer 2 ahead of timer 0.
	w.Schedule(&tms[2], 10*time.Millisecond, exps[2])
	if w.Len() != 3 {
		t.Fatalf("Len %d, want 3", w.Len())
	}
	for _, want := range []int{2, 1, 0} {
		if got := <-ch; got != want {
			t.Fatalf("fired %d, want %d", got, want)
		}
	}
}

type orderExp struct {
	i  int
	ch chan int
}

func (o *orderExp) Expire(int64) { o.ch <- o.i }

func TestWheelCancel(t *testing.T) {
	w := newWheel(t, 5*time.Millisecond, 8)
	f := &fire{ch: make(chan int64, 1)}
	var a Timer
	if w.Cancel(&a) {
		t.Fatal("Cancel of a zero Timer returned true")
	}
	w.Schedule(&a, 10*time.Millisecond, f)
	if !w.Cancel(&a) {
		t.Fatal("Cancel of an armed Timer returned false")
	}
	// b fires after a would have; if a had fired it would be seen first.
	g := &fire{ch: make(chan int64, 1)}
	var b Timer
	w.Schedule(&b, 40*time.Millisecond, g)
	<-g.ch
	select {
	case <-f.ch:
		t.Fatal("cancelled timer fired")
	default:
	}
}

// cancelOther cancels another timer due in the same tick from its Expire.
type cancelOther struct {
	w     *Wheel
	other *Timer
	res   chan bool
}

func (c *cancelOther) Expire(int64) { c.res <- c.w.Cancel(c.other) }

func TestWheelCancelFromExpire(t *testing.T) {
	w := NewWheel(5*time.Millisecond, 8)
	f := &fire{ch: make(chan int64, 1)}
	var a, b Timer
	c := &cancelOther{w: w, other: &b, res: make(chan bool, 1)}
	// Both due on the same tick; a was linked first so it fires first.
	w.Schedule(&a, 10*time.Millisecond, c)
	w.Schedule(&b, 10*time.Millisecond, f)
	w.Start()
	t.Cleanup(w.Stop)
	if !<-c.res {
		t.Fatal("Cancel of a timer due in the same tick returned false")
	}
	g := &fire{ch: make(chan int64, 1)}
	var z Timer
	w.Schedule(&z, 30*time.Millisecond, g)
	<-g.ch
	select {
	case <-f.ch:
		t.Fatal("timer cancelled from another Expire fired")
	default:
	}
}

// again reschedules its own timer from Expire until n reaches zero.
type again struct {
	w    *Wheel
	t    Timer
	n    int
	done chan struct{}
}

func (a *again) Expire(int64) {
	a.n--
	if a.n == 0 {
		close(a.done)
		return
	}
	a.w.Schedule(&a.t, 0, a)
}

func TestWheelRescheduleFromExpire(t *testing.T) {
	w := newWheel(t, time.Millisecond, 4)
	a := &again{w: w, n: 10, done: make(chan struct{})}
	w.Schedule(&a.t, 0, a)
	<-a.done
}

func TestWheelConcurrent(t *testing.T) {
	w := newWheel(t, time.Millisecond, 16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &fire{ch: make(chan int64, 1000)}
			var tms [16]Timer
			for i := range 2000 {
				tm := &tms[(i+g)%len(tms)]
				if i%3 == 0 {
					w.Cancel(tm)
				} else {
					w.Schedule(tm, time.Duration(i%7)*time.Millisecond, f)
				}
				select {
				case <-f.ch:
				default:
				}
			}
			for i := range tms {
				w.Cancel(&tms[i])
			}
		}()
	}
	wg.Wait()
	if w.Len() != 0 {
		t.Fatalf("Len %d after cancelling everything", w.Len())
	}
}

func TestWheelStopWithoutStart(t *testing.T) {
	w := NewWheel(0, 0)
	w.Stop()
	w.Stop()
	w.Start() // a no-op after Stop
	w.Stop()
}

func TestWheelNowAdvances(t *testing.T) {
	w := newWheel(t, time.Millisecond, 0)
	first := w.Now()
	deadline := time.Now().Add(5 * time.Second)
	for w.Now() == first {
		if time.Now().After(deadline) {
			t.Fatal("Now did not advance")
		}
		time.Sleep(time.Millisecond)
	}
}

type nopExp struct{}

func (nopExp) Expire(int64) {}

func BenchmarkWheelSchedule(b *testing.B) {
	w := NewWheel(time.Second, 0)
	var tms [1024]Timer
	e := nopExp{}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.Schedule(&tms[i&1023], time.Duration(i&63)*time.Second, e)
		i++
	}
}
