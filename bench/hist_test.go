package bench

import (
	"encoding/json"
	"testing"
)

// TestMergeSnapshots merges two histograms that went through JSON as
// exported snapshots and compares with one histogram that saw every value.
func TestMergeSnapshots(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for v := int64(1); v <= 1000; v++ {
		_ = a.RecordValue(v)
		_ = all.RecordValue(v)
	}
	for v := int64(1); v <= 100; v++ {
		_ = b.RecordValue(v * 1000)
		_ = all.RecordValue(v * 1000)
	}
	var snaps []*Snapshot
	for _, h := range []*Snapshot{SnapshotOf(a), SnapshotOf(b)} {
		raw, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		var s Snapshot
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, &s)
	}
	got, err := MergeSnapshots(snaps...)
	if err != nil {
		t.Fatal(err)
	}
	if got.TotalCount() != 1100 {
		t.Fatalf("merged count %d, want 1100", got.TotalCount())
	}
	if !got.Equals(all) {
		t.Errorf("merged histogram differs from the one that saw every value")
	}
	for _, p := range []float64{50, 90, 99, 99.9, 100} {
		if g, w := got.ValueAtPercentile(p), all.ValueAtPercentile(p); g != w {
			t.Errorf("p%v = %d, want %d", p, g, w)
		}
	}
	if got.Max() < 99_000 || got.Max() > 101_000 {
		t.Errorf("max %d, want about 100000", got.Max())
	}
}

func TestSnapshotRejectsBadIndex(t *testing.T) {
	s := SnapshotOf(NewHistogram())
	s.Counts = append(s.Counts, [2]int64{1 << 40, 1})
	if _, err := s.Histogram(); err == nil {
		t.Fatal("a count outside the histogram was accepted")
	}
}

func TestRecorderClampsAndIntervals(t *testing.T) {
	r := NewRecorder()
	r.Record(5)            // below 1µs
	r.Record(2 * 60 * 1e9) // two minutes
	r.Record(1_500_000)    // 1.5ms
	iv := r.TakeInterval()
	if iv.TotalCount() != 3 {
		t.Fatalf("interval count %d", iv.TotalCount())
	}
	if iv.Min() != 1 || !iv.ValuesAreEquivalent(iv.Max(), histHighest) {
		t.Errorf("clamping: min %d max %d", iv.Min(), iv.Max())
	}
	r.Record(1000)
	if n := r.TakeInterval().TotalCount(); n != 1 {
		t.Errorf("second interval count %d, want 1", n)
	}
	if n := r.Total().TotalCount(); n != 4 {
		t.Errorf("total count %d, want 4", n)
	}
}
