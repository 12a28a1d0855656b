package netpoll

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRateBurstThenPace(t *testing.T) {
	r := NewRate(10, 3) // a token every 100ms, three at most
	var tat int64
	now := int64(time.Hour)
	for i := range 3 {
		if !r.Take(&tat, now) {
			t.Fatalf("take %d of a full bucket of 3 refused", i)
		}
	}
	if r.Take(&tat, now) {
		t.Fatal("a fourth take at the same instant was allowed")
	}
	before := tat
	for range 100 {
		r.Take(&tat, now)
	}
	if tat != before {
		t.Fatal("refused takes changed the bucket")
	}
	if r.Take(&tat, now+99*int64(time.Millisecond)) {
		t.Fatal("a token came back before its interval")
	}
	if !r.Take(&tat, now+100*int64(time.Millisecond)) {
		t.Fatal("no token after one interval")
	}
	// A long pause refills the bucket, but never beyond its burst.
	later := now + int64(time.Minute)
	n := 0
	for r.Take(&tat, later) {
		n++
	}
	if n != 3 {
		t.Fatalf("%d tokens after a long pause, want the burst of 3", n)
	}
}

// Over a long run the tokens granted follow the rate, however fast takes
// come.
func TestRateSteady(t *testing.T) {
	r := NewRate(1000, 50)
	var tat int64
	got := 0
	const step = 100 * time.Microsecond // ten times faster than the rate
	for i := range 100_000 {
		if r.Take(&tat, int64(i)*int64(step)) {
			got++
		}
	}
	// 10 s of takes: 10 000 tokens plus the first burst.
	if got < 10_000 || got > 10_050 {
		t.Fatalf("%d tokens in 10s at 1000/s with a burst of 50", got)
	}
}

func TestRateZeroAllowsAll(t *testing.T) {
	var tat int64
	var shared atomic.Int64
	for _, r := range []Rate{{}, NewRate(0, 10), NewRate(-1, 10)} {
		if r.On() {
			t.Fatalf("%+v is on", r)
		}
		for range 1000 {
			if !r.Take(&tat, 0) {
				t.Fatal("zero Rate refused")
			}
			if ok, _ := r.TakeShared(&shared, 0); !ok {
				t.Fatal("zero Rate refused a shared take")
			}
		}
	}
}

func TestRateSharedExactUnderContention(t *testing.T) {
	r := NewRate(1, 500) // no refill within the test: the burst is all there is
	var tat atomic.Int64
	now := time.Now().UnixNano()
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if ok, _ := r.TakeShared(&tat, now); ok {
					granted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if granted.Load() != 500 {
		t.Fatalf("%d tokens granted from a bucket of 500", granted.Load())
	}
	ok, wait := r.TakeShared(&tat, now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("empty bucket: ok %v, wait %v; want a wait of at most one interval", ok, wait)
	}
	if ok, _ := r.TakeShared(&tat, now+int64(wait)); !ok {
		t.Fatalf("no token after the wait of %v", wait)
	}
}

func BenchmarkRateTake(b *testing.B) {
	b.ReportAllocs()
	r := NewRate(1<<30, 1<<30)
	var tat int64
	now := time.Now().UnixNano()
	for i := range b.N {
		if !r.Take(&tat, now+int64(i)) {
			b.Fatal("refused")
		}
	}
}
