package bench

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	h := NewHistogram()
	for v := int64(100); v < 5000; v += 7 {
		_ = h.RecordValue(v)
	}
	r := &Report{
		Scenario: "echo",
		Command:  []string{"shoal", "bench", "echo", "--conns", "10"},
		Host:     Host{CPUModel: "cpu", Cores: 2, Kernel: "Linux 6.1"},
		Target:   "ws://127.0.0.1:1/ws/echo",
		Options:  map[string]any{"conns": "10"},
		Started:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		WallSec:  3.5,
		Procs:    2,
		Conns:    ConnStats{Target: 10, Established: 9, Failed: 1, Failures: map[string]int64{"refused": 1}, RampSec: 0.5, ConnectRate: 18},
		Messages: MessageStats{Sent: 100, Received: 99, Expected: 100, Lost: 1, Seconds: 2, SentPerSec: 50, RecvPerSec: 49.5},
		Latency:  map[string]*Latency{"rtt": Summarize(h)},
		Server:   &ServerMemory{PIDs: []int{1, 2}, BeforeKiB: 1000, AfterKiB: 1100, PerConnBytes: 11377.8},
		Self:     SelfCheck{CPU: 0.95, CPUs: 2, Bottleneck: true, Warnings: []string{"w"}},
		Fanout:   &FanoutStats{Rooms: 1, Published: []uint64{10}, Members: []int64{9}, Received: []DistinctCount{{Room: 0, Distinct: 10, Members: 9}}},
		Timeline: []Progress{{Sec: 1, Open: 9, Target: 10, Received: 50, P50Us: 300, P99Us: 4000}},
	}
	return r
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := sampleReport()
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReport(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip changed the report:\n got %+v\nwant %+v", got, r)
	}
	h, err := got.Latency["rtt"].Snapshot.Histogram()
	if err != nil {
		t.Fatal(err)
	}
	if h.ValueAtPercentile(99) != r.Latency["rtt"].P99Us || h.TotalCount() != r.Latency["rtt"].Count {
		t.Errorf("snapshot does not reproduce the summary")
	}
	for _, key := range []string{`"p99_us"`, `"distribution"`, `"snapshot"`, `"cpu_model"`, `"kernel"`, `"command"`} {
		if !strings.Contains(buf.String(), key) && !strings.Contains(mustJSON(t, r), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func mustJSON(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestReportTableAndWarnings(t *testing.T) {
	r := sampleReport()
	r.Self.Warnings = nil
	r.Messages.MaxLateUs = 25_000
	r.Self.Late = 3
	r.judge()
	if !r.Self.Bottleneck || len(r.Self.Warnings) != 2 {
		t.Fatalf("warnings %q", r.Self.Warnings)
	}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"9 of 10 established", "failed: refused", "rtt latency", "p99.9", "WARNING: bench CPU at 95%", "WARNING: 3 sends"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestMergeReports(t *testing.T) {
	a, b := sampleReport(), sampleReport()
	b.Fanout.Published = []uint64{0}
	m, err := mergeReports([]*Report{a, b})
	if err != nil {
		t.Fatal(err)
	}
	finish(m)
	if m.Conns.Established != 18 || m.Conns.Failures["refused"] != 2 || m.Messages.Sent != 200 {
		t.Fatalf("sums: %+v %+v", m.Conns, m.Messages)
	}
	if m.Latency["rtt"].Count != 2*a.Latency["rtt"].Count {
		t.Errorf("merged rtt count %d", m.Latency["rtt"].Count)
	}
	// 18 members of the one room, 10 messages published: 180 expected,
	// 18 members saw all 10.
	if m.Messages.Expected != 180 || m.Messages.Lost != 0 || m.Messages.MembersWithLoss != 0 {
		t.Errorf("fanout: %+v", m.Messages)
	}
}

func TestRoleGrowth(t *testing.T) {
	s := &ServerMemory{
		PIDs:          []int{1, 2, 3, 4},
		Roles:         []string{"supervisor", "worker", "worker", "service"},
		ProcBeforeKiB: []int64{100, 50, 60, 40},
		ProcAfterKiB:  []int64{110, 150, 260, 39},
	}
	roles, kib := s.RoleGrowth()
	if !slices.Equal(roles, []string{"supervisor", "worker", "service"}) || !slices.Equal(kib, []int64{10, 300, -1}) {
		t.Fatalf("RoleGrowth = %v %v", roles, kib)
	}
	s.ProcAfterKiB = s.ProcAfterKiB[:3]
	if roles, _ := s.RoleGrowth(); roles != nil {
		t.Fatalf("mismatched lengths gave %v", roles)
	}
}

func TestRoleCPU(t *testing.T) {
	s := &ServerMemory{
		PIDs:           []int{1, 2, 3, 4},
		Roles:          []string{"supervisor", "worker", "worker", "service"},
		ProcCPUSeconds: []float64{0.5, 1, 2, 0.25},
	}
	roles, sec := s.RoleCPU()
	if !slices.Equal(roles, []string{"supervisor", "worker", "service"}) || !slices.Equal(sec, []float64{0.5, 3, 0.25}) {
		t.Fatalf("RoleCPU = %v %v", roles, sec)
	}
	s.ProcCPUSeconds = nil
	if roles, _ := s.RoleCPU(); roles != nil {
		t.Fatalf("no CPU figures gave %v", roles)
	}
}
