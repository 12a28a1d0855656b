package bench

import (
	"fmt"
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram geometry: microseconds from 1µs to 60s, 3 significant digits.
const (
	histLowest  = 1
	histHighest = 60_000_000
	histDigits  = 3
)

// NewHistogram returns an empty latency histogram in microseconds.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// Recorder records latencies into a run-long histogram and an interval one
// that the progress line takes every second. It is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	total    *hdrhistogram.Histogram
	interval *hdrhistogram.Histogram
	spare    *hdrhistogram.Histogram
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{total: NewHistogram(), interval: NewHistogram(), spare: NewHistogram()}
}

// Record adds a latency in nanoseconds. Values outside the histogram's range
// are clamped to it, so that a 2-minute stall still counts as 60s and not
// as nothing.
func (r *Recorder) Record(ns int64) {
	us := clampUs(ns)
	r.mu.Lock()
	_ = r.total.RecordValue(us)
	_ = r.interval.RecordValue(us)
	r.mu.Unlock()
}

func clampUs(ns int64) int64 {
	us := ns / 1000
	if us < histLowest {
		return histLowest
	}
	if us > histHighest {
		return histHighest
	}
	return us
}

// TakeInterval returns a copy of what was recorded since the last call and
// starts a new interval.
func (r *Recorder) TakeInterval() *hdrhistogram.Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.interval.Clone()
	r.interval, r.spare = r.spare, r.interval
	r.interval.Reset()
	return out
}

// Total returns a copy of everything recorded.
func (r *Recorder) Total() *hdrhistogram.Histogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total.Clone()
}

// Snapshot is a histogram as exported by hdrhistogram's Export, with its
// counts stored sparsely: pairs of [index, count] for non-zero counts, so
// that a histogram of a few distinct values stays a few bytes in JSON.
type Snapshot struct {
	Lowest  int64      `json:"lowest"`
	Highest int64      `json:"highest"`
	Digits  int64      `json:"digits"`
	Counts  [][2]int64 `json:"counts"`
}

// SnapshotOf exports h.
func SnapshotOf(h *hdrhistogram.Histogram) *Snapshot {
	ex := h.Export()
	s := &Snapshot{Lowest: ex.LowestTrackableValue, Highest: ex.HighestTrackableValue, Digits: ex.SignificantFigures, Counts: [][2]int64{}}
	for i, c := range ex.Counts {
		if c != 0 {
			s.Counts = append(s.Counts, [2]int64{int64(i), c})
		}
	}
	return s
}

// Histogram imports s.
func (s *Snapshot) Histogram() (*hdrhistogram.Histogram, error) {
	if s == nil {
		return NewHistogram(), nil
	}
	n := len(hdrhistogram.New(s.Lowest, s.Highest, int(s.Digits)).Export().Counts)
	ex := &hdrhistogram.Snapshot{
		LowestTrackableValue:  s.Lowest,
		HighestTrackableValue: s.Highest,
		SignificantFigures:    s.Digits,
		Counts:                make([]int64, n),
	}
	for _, p := range s.Counts {
		if p[0] < 0 || p[0] >= int64(n) || p[1] < 0 {
			return nil, fmt.Errorf("%w: count index %d of %d", ErrSnapshot, p[0], n)
		}
		ex.Counts[p[0]] = p[1]
	}
	if err := ex.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	return hdrhistogram.Import(ex), nil
}

// MergeSnapshots imports and merges snapshots into one histogram.
func MergeSnapshots(snaps ...*Snapshot) (*hdrhistogram.Histogram, error) {
	out := NewHistogram()
	for _, s := range snaps {
		h, err := s.Histogram()
		if err != nil {
			return nil, err
		}
		out.Merge(h)
	}
	return out, nil
}

// Percentiles reported in tables and JSON.
var summaryPercentiles = []float64{50, 90, 99, 99.9}

// Latency summarizes one histogram for the report, in microseconds.
type Latency struct {
	Count  int64   `json:"count"`
	MinUs  int64   `json:"min_us"`
	MeanUs float64 `json:"mean_us"`
	P50Us  int64   `json:"p50_us"`
	P90Us  int64   `json:"p90_us"`
	P99Us  int64   `json:"p99_us"`
	P999Us int64   `json:"p999_us"`
	MaxUs  int64   `json:"max_us"`
	// Distribution is the percentile curve: value at each percentile on a
	// logarithmic ladder towards 100, for plots.
	Distribution []PercentilePoint `json:"distribution"`
	// Snapshot is the whole histogram, to merge or re-analyse later.
	Snapshot *Snapshot `json:"snapshot"`
}

// PercentilePoint is one point of a percentile curve.
type PercentilePoint struct {
	Percentile float64 `json:"percentile"`
	Us         int64   `json:"us"`
}

// curvePercentiles is the ladder of Latency.Distribution: 0, 50, 75, 87.5…
// towards 99.9999, then 100.
func curvePercentiles() []float64 {
	out := []float64{0}
	for gap := 50.0; gap > 0.0001; gap /= 2 {
		out = append(out, 100-gap)
	}
	return append(out, 100)
}

// Summarize builds the report's view of h.
func Summarize(h *hdrhistogram.Histogram) *Latency {
	l := &Latency{Count: h.TotalCount(), Snapshot: SnapshotOf(h), Distribution: []PercentilePoint{}}
	if l.Count == 0 {
		return l
	}
	v := h.ValueAtPercentiles(summaryPercentiles)
	l.MinUs, l.MaxUs, l.MeanUs = h.Min(), h.Max(), h.Mean()
	l.P50Us, l.P90Us, l.P99Us, l.P999Us = v[50], v[90], v[99], v[99.9]
	for _, p := range curvePercentiles() {
		l.Distribution = append(l.Distribution, PercentilePoint{Percentile: p, Us: h.ValueAtPercentile(p)})
	}
	return l
}
