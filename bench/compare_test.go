package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sampleComparison is a comparison of two echo runs and a failed one: the
// second run has half the throughput and twice the latency of the first.
func sampleComparison() *Comparison {
	a, b := sampleReport(), sampleReport()
	a.Self = SelfCheck{CPUs: 2}
	b.Self = SelfCheck{CPUs: 2, Bottleneck: true, Warnings: []string{"bench CPU at 95%"}}
	b.Messages.RecvPerSec = a.Messages.RecvPerSec / 2
	b.Messages.Lost = 0
	a.Messages.Lost = 0
	b.Server = nil
	bl := *a.Latency["rtt"]
	bl.P99Us *= 2
	b.Latency = map[string]*Latency{"rtt": &bl}
	return &Comparison{
		Kind:     "compare",
		Scenario: "echo",
		Command:  []string{"shoal", "bench", "compare", "--scenario", "echo"},
		Host:     Host{CPUModel: "cpu", Cores: 2, Kernel: "Linux 6.1"},
		Started:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Baseline: "shoal",
		Runs: []*Run{
			{Name: "shoal", Server: "shoal", Workers: 2, URL: "ws://127.0.0.1:1", Report: a},
			{Name: "gorilla", Server: "gorilla", URL: "ws://127.0.0.1:2", Report: b},
			{Name: "gws", Server: "gws", Error: "bench: target server failed: gws exited"},
		},
	}
}

func TestComparisonRatios(t *testing.T) {
	c := sampleComparison()
	c.Compute()
	shoal, gorilla, gws := c.Runs[0], c.Runs[1], c.Runs[2]
	if got := gorilla.Ratios["throughput_per_sec"]; got != 0.5 {
		t.Errorf("throughput ratio %v, want 0.5", got)
	}
	if got := gorilla.Ratios["latency_p99_us"]; got != 2 {
		t.Errorf("p99 ratio %v, want 2", got)
	}
	if got := shoal.Ratios["latency_p50_us"]; got != 1 {
		t.Errorf("baseline's own ratio %v, want 1", got)
	}
	if _, ok := gorilla.Ratios["lost"]; ok {
		t.Errorf("a ratio over a baseline of 0 lost: %v", gorilla.Ratios["lost"])
	}
	if _, ok := gorilla.Figures["rss_per_conn_bytes"]; ok {
		t.Errorf("memory figure for a run that did not measure it")
	}
	if _, ok := gorilla.Ratios["bottleneck"]; ok {
		t.Errorf("the bottleneck flag has no ratio")
	}
	if len(gws.Figures) != 0 || len(gws.Ratios) != 0 {
		t.Errorf("failed run has figures %v ratios %v", gws.Figures, gws.Ratios)
	}
}

func TestComparisonTable(t *testing.T) {
	c := sampleComparison()
	c.Compute()
	var b bytes.Buffer
	if err := c.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	row := func(label string) []string {
		t.Helper()
		for _, l := range lines {
			if strings.HasPrefix(l, "  "+label+"  ") {
				return strings.Fields(strings.TrimPrefix(l, "  "+label))
			}
		}
		t.Fatalf("no row %q in:\n%s", label, out)
		return nil
	}
	head := strings.Fields(lines[1])
	if !slices.Equal(head, []string{"figure", "shoal", "gorilla", "gws"}) {
		t.Errorf("heading %q", head)
	}
	// sampleReport: 49.5 received per second.
	if got := row("echoes/s"); !slices.Equal(got, []string{"49.5/s", "24.8/s", "(0.50x)", "-"}) {
		t.Errorf("echoes/s row %q", got)
	}
	if got := row("rtt p99"); len(got) != 4 || got[2] != "(2.00x)" || got[3] != "-" {
		t.Errorf("rtt p99 row %q", got)
	}
	if got := row("received/expected"); !slices.Equal(got, []string{"99/100", "99/100", "-"}) {
		t.Errorf("received row %q", got)
	}
	if got := row("bench bottleneck"); !slices.Equal(got, []string{"no", "WARNING", "-"}) {
		t.Errorf("bottleneck row %q", got)
	}
	if got := row("server RSS/conn"); !slices.Equal(got, []string{"11.1", "KiB", "-", "-"}) {
		t.Errorf("memory row %q", got)
	}
	for _, want := range []string{"compare echo: ratios to shoal", "WARNING (gorilla): bench CPU at 95%", "ERROR (gws): bench: target server failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// A connect run has no message figures: their rows are left out.
	c.Scenario = "connect"
	for _, r := range c.Runs {
		if r.Report != nil {
			r.Report.Messages = MessageStats{}
			r.Report.Latency = map[string]*Latency{"handshake": r.Report.Latency["rtt"]}
		}
	}
	c.Compute()
	b.Reset()
	if err := c.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"msgs/s", "lost", "latency p50"} {
		if strings.Contains(b.String(), absent) {
			t.Errorf("connect table has %q:\n%s", absent, b.String())
		}
	}
	if !strings.Contains(b.String(), "handshake p99") {
		t.Errorf("connect table lacks the handshake:\n%s", b.String())
	}
}

func TestComparisonJSON(t *testing.T) {
	c := sampleComparison()
	c.Compute()
	var b bytes.Buffer
	if err := c.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"kind": "compare"`, `"baseline": "shoal"`, `"command"`, `"cpu_model": "cpu"`, `"ratios"`, `"throughput_per_sec": 0.5`, `"snapshot"`, `"error": "bench: target`} {
		if !strings.Contains(b.String(), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	got, err := ReadComparison(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Runs) != 3 || got.Runs[1].Ratios["latency_p99_us"] != 2 || got.Runs[0].Report.Messages.Sent != 100 {
		t.Fatalf("round trip: %+v", got.Runs)
	}
	if got.Runs[0].Report.Latency["rtt"].Count != c.Runs[0].Report.Latency["rtt"].Count {
		t.Errorf("histogram lost in the round trip")
	}
}

func TestParseMulti(t *testing.T) {
	var stderr bytes.Buffer
	mo, err := parseMulti("compare", []string{"--scenario", "fanout", "--targets", "gorilla,shoal", "--workers", "3",
		"--conns", "40", "--rooms", "4", "--client-workers", "6", "--procs", "2", "--json", "x.json"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if mo.path != "/ws/fanout" || mo.baseline != "shoal" || mo.json != "x.json" {
		t.Errorf("path %q baseline %q json %q", mo.path, mo.baseline, mo.json)
	}
	if want := []runPlan{{"gorilla", "gorilla", 0}, {"shoal", "shoal", 3}}; !slices.Equal(mo.plan, want) {
		t.Errorf("plan %v, want %v", mo.plan, want)
	}
	// By default every target that serves the scenario: Centrifugo has no echo.
	for scenario, want := range map[string]string{"fanout": "shoal centrifugo gorilla nbio gws", "echo": "shoal gorilla nbio gws"} {
		mo, err := parseMulti("compare", []string{"--scenario", scenario}, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range mo.plan {
			names = append(names, p.name)
		}
		if got := strings.Join(names, " "); got != want {
			t.Errorf("%s: default targets %q, want %q", scenario, got, want)
		}
	}
	slices.Sort(mo.scenarioArgs)
	if want := []string{"--conns=40", "--procs=2", "--rooms=4", "--workers=6"}; !slices.Equal(mo.scenarioArgs, want) {
		t.Errorf("scenario args %q, want %q", mo.scenarioArgs, want)
	}

	mo, err = parseMulti("sweep", []string{"--scenario=echo", "--workers", "1,2,4", "--msg-rate", "10"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if len(mo.plan) != 3 || mo.plan[2] != (runPlan{"workers=4", "shoal", 4}) || mo.baseline != "workers=1" || mo.path != "/ws/echo" {
		t.Errorf("sweep plan %v baseline %q", mo.plan, mo.baseline)
	}

	for _, c := range []struct {
		kind string
		args []string
		want error
		msg  string
	}{
		{"compare", []string{"--targets", "shoal"}, ErrUsage, "--scenario"},
		{"compare", []string{"--scenario", "dance"}, ErrUnknownScenario, "dance"},
		{"compare", []string{"--scenario", "echo", "--targets", "shoal,nginx"}, ErrUsage, "nginx"},
		{"compare", []string{"--scenario", "echo", "--targets", "gws,gws"}, ErrUsage, "twice"},
		{"compare", []string{"--scenario", "echo", "--targets", "shoal,centrifugo"}, ErrUsage, "centrifugo has no echo"},
		{"compare", []string{"--scenario", "echo", "--workers", "1,2"}, ErrUsage, "one count"},
		{"compare", []string{"--scenario", "echo", "--conns", "0"}, ErrUsage, "--conns"},
		{"sweep", []string{"--scenario", "echo", "--workers", "1,x"}, ErrUsage, "x"},
		{"sweep", []string{"--scenario", "echo", "stray"}, ErrUsage, "stray"},
	} {
		_, err := parseMulti(c.kind, c.args, &stderr)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s %q: %v, want %v naming %q", c.kind, c.args, err, c.want, c.msg)
		}
	}
	// The tool sets the target's address and server processes itself.
	for _, f := range []string{"--admin", "--server-pid", "--proto", "--hmac-secret"} {
		if _, err := parseMulti("compare", []string{"--scenario", "echo", f, "1"}, &stderr); err == nil {
			t.Errorf("%s accepted", f)
		}
	}
}

// shoalBinary builds cmd/shoal into a temporary directory.
func shoalBinary(t testing.TB) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "shoal")
	cmd := exec.Command("go", "build", "-o", exe, "./cmd/shoal")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shoal: %v\n%s", err, out)
	}
	return exe
}

// runShoal runs the binary and returns its stdout; it fails the test on a
// non-zero exit.
func runShoal(t testing.TB, exe string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("shoal %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	return out.String()
}

func readComparisonFile(t testing.TB, path string) *Comparison {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ReadComparison(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCompareAndSweepProcesses runs the real binary: compare starts shoal
// serve and builds and starts the gorilla peer; sweep starts shoal twice.
func TestCompareAndSweepProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds shoal and the gorilla peer and runs them for several seconds")
	}
	exe := shoalBinary(t)
	dir := t.TempDir()

	t.Run("compare", func(t *testing.T) {
		jsonPath, plotPath := filepath.Join(dir, "compare.json"), filepath.Join(dir, "compare.svg")
		out := runShoal(t, exe, "bench", "compare", "--scenario", "echo", "--targets", "shoal,gorilla",
			"--conns", "20", "--msg-rate", "100", "--duration", "2s", "--json", jsonPath, "--plot", plotPath)
		for _, want := range []string{"== shoal (ws://127.0.0.1:", "== gorilla (ws://127.0.0.1:", "compare echo: ratios to shoal"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		c := readComparisonFile(t, jsonPath)
		if len(c.Runs) != 2 || c.Runs[0].Name != "shoal" || c.Runs[1].Name != "gorilla" || c.Baseline != "shoal" {
			t.Fatalf("runs %+v", c.Runs)
		}
		for _, r := range c.Runs {
			if r.Error != "" || r.Report == nil {
				t.Fatalf("%s: error %q", r.Name, r.Error)
			}
			m := r.Report.Messages
			if r.Report.Conns.Established != 20 || m.Sent != 200 || m.Received != 200 || m.Lost != 0 || m.Duplicated != 0 {
				t.Errorf("%s: conns %+v messages %+v", r.Name, r.Report.Conns, m)
			}
			if r.Report.Server == nil || len(r.Report.Server.PIDs) == 0 || r.Report.Server.AfterKiB == 0 {
				t.Errorf("%s: server memory not measured: %+v", r.Name, r.Report.Server)
			}
			if _, ok := r.Ratios["throughput_per_sec"]; !ok {
				t.Errorf("%s: no throughput ratio: %v", r.Name, r.Ratios)
			}
		}
		if n := len(c.Runs[0].Report.Server.PIDs); n < 3 {
			t.Errorf("shoal's memory covers %d processes; want the supervisor, its workers and services", n)
		}
		counts := svgPolylines(t, plotPath)
		if counts["latency"] != 2 || counts["throughput"] != 2 {
			t.Errorf("plot polylines %v, want 2 per panel", counts)
		}
	})

	t.Run("sweep", func(t *testing.T) {
		jsonPath := filepath.Join(dir, "sweep.json")
		out := runShoal(t, exe, "bench", "sweep", "--scenario", "fanout", "--workers", "1,2",
			"--conns", "20", "--rooms", "2", "--pub-rate", "20", "--duration", "1s", "--json", jsonPath)
		if !strings.Contains(out, "== workers=1 (ws://") || !strings.Contains(out, "== workers=2 (ws://") {
			t.Errorf("output lacks the run headers:\n%s", out)
		}
		c := readComparisonFile(t, jsonPath)
		if len(c.Runs) != 2 || c.Baseline != "workers=1" {
			t.Fatalf("runs %+v baseline %q", c.Runs, c.Baseline)
		}
		for i, r := range c.Runs {
			if r.Error != "" || r.Report == nil || r.Workers != i+1 {
				t.Fatalf("%s: workers %d error %q", r.Name, r.Workers, r.Error)
			}
			// 20 messages over 2 rooms of 10 members each: 200 deliveries.
			m := r.Report.Messages
			if m.Sent != 20 || m.Expected != 200 || m.Received != 200 || m.Lost != 0 || m.Duplicated != 0 {
				t.Errorf("%s: messages %+v", r.Name, m)
			}
			// Each worker's open files and Go runtime, read through the
			// admin endpoint: the figures for choosing a worker count.
			ws := r.Report.Server.Workers
			if len(ws) != i+1 {
				t.Fatalf("%s: %d workers read, want %d", r.Name, len(ws), i+1)
			}
			fds := 0
			for _, w := range ws {
				if w.Error != "" || w.FDs == 0 || w.HeapSysKiB == 0 {
					t.Errorf("%s: worker %+v", r.Name, w)
				}
				fds += w.FDs
			}
			if fds < 20 {
				t.Errorf("%s: the workers hold %d files, fewer than the 20 connections", r.Name, fds)
			}
			for _, key := range []string{"worker_fds_max", "worker_heap_max_bytes", "gc_pause_max_us", "gc_cpu_max"} {
				if _, ok := r.Figures[key]; !ok {
					t.Errorf("%s: no %s figure", r.Name, key)
				}
			}
		}
	})
}

// svgPolylines counts the polylines of each class in an SVG file, and
// checks that it is well-formed XML.
func svgPolylines(t testing.TB, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return counts
			}
			t.Fatalf("%s: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			for _, a := range se.Attr {
				if a.Name.Local == "class" {
					counts[a.Value]++
				}
			}
		}
	}
}

// TestProcsMerge runs scenarios split over two real bench processes and
// checks that the parent's report adds up both children's counts and
// histograms.
func TestProcsMerge(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds shoal and runs bench child processes")
	}
	exe := shoalBinary(t)
	addr := startShoal(t)
	dir := t.TempDir()

	fanoutJSON := filepath.Join(dir, "fanout.json")
	out := runShoal(t, exe, "bench", "fanout", "--procs", "2", "--url", "ws://"+addr+"/ws/fanout",
		"--conns", "40", "--rooms", "4", "--rate", "500", "--pub-rate", "40", "--duration", "1s", "--size", "64", "--json", fanoutJSON)
	rep := readReportFile(t, fanoutJSON)
	m := rep.Messages
	// 40 messages, 10 per room, each to the room's 10 members.
	if rep.Procs != 2 || rep.Conns.Established != 40 || m.Sent != 40 || m.Expected != 400 || m.Received != 400 || m.Lost != 0 || m.Duplicated != 0 {
		t.Fatalf("procs %d conns %+v messages %+v\n%s", rep.Procs, rep.Conns, m, out)
	}
	if l := rep.Latency["delivery"]; l == nil || l.Count != 400 {
		t.Fatalf("merged delivery histogram %+v, want 400 values", l)
	}
	if l := rep.Latency["handshake"]; l == nil || l.Count != 40 {
		t.Fatalf("merged handshake histogram %+v, want 40 values", l)
	}

	echoJSON := filepath.Join(dir, "echo.json")
	out = runShoal(t, exe, "bench", "echo", "--procs", "2", "--url", "ws://"+addr+"/ws/echo",
		"--conns", "20", "--rate", "500", "--msg-rate", "200", "--duration", "1s", "--json", echoJSON)
	rep = readReportFile(t, echoJSON)
	m = rep.Messages
	if rep.Procs != 2 || rep.Conns.Established != 20 || m.Sent != 200 || m.Received != 200 || m.Lost != 0 {
		t.Fatalf("procs %d conns %+v messages %+v\n%s", rep.Procs, rep.Conns, m, out)
	}
	if l := rep.Latency["rtt"]; l == nil || l.Count != 200 {
		t.Fatalf("merged rtt histogram %+v, want 200 values", l)
	}
}

// TestCompareCentrifugo runs compare against shoal and the real
// Centrifugo, built from its module, in connect and fanout: every
// connection held, every delivery made once, and both servers' memory
// read.
func TestCompareCentrifugo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds shoal and Centrifugo and runs them")
	}
	// Built once here, so that compare's own build below is a cached one
	// within runShoal's time limit even on a fresh machine.
	centrifugoBinary(t)
	exe := shoalBinary(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		scenario string
		args     []string
		check    func(t *testing.T, r *Run)
	}{
		{"connect", []string{"--conns", "20", "--hold", "1s"}, func(t *testing.T, r *Run) {
			if c := r.Report.Conns; c.Established != 20 || c.Failed != 0 || c.Dropped != 0 {
				t.Errorf("%s: conns %+v", r.Name, c)
			}
		}},
		// 20 messages over 2 rooms of 10 members each: 200 deliveries.
		{"fanout", []string{"--conns", "20", "--rooms", "2", "--pub-rate", "20", "--duration", "1s"}, func(t *testing.T, r *Run) {
			m := r.Report.Messages
			if m.Sent != 20 || m.Expected != 200 || m.Received != 200 || m.Lost != 0 || m.Duplicated != 0 {
				t.Errorf("%s: messages %+v", r.Name, m)
			}
			if l := r.Report.Latency["delivery"]; l == nil || l.Count != 200 {
				t.Errorf("%s: delivery latencies %+v", r.Name, l)
			}
		}},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			jsonPath := filepath.Join(dir, tc.scenario+".json")
			out := runShoal(t, exe, append([]string{"bench", "compare", "--scenario", tc.scenario, "--targets", "shoal,centrifugo", "--json", jsonPath}, tc.args...)...)
			if !strings.Contains(out, "== centrifugo (ws://127.0.0.1:") {
				t.Errorf("output lacks the centrifugo run:\n%s", out)
			}
			c := readComparisonFile(t, jsonPath)
			if len(c.Runs) != 2 || c.Runs[1].Name != "centrifugo" {
				t.Fatalf("runs %+v", c.Runs)
			}
			for _, r := range c.Runs {
				if r.Error != "" || r.Report == nil {
					t.Fatalf("%s: error %q", r.Name, r.Error)
				}
				tc.check(t, r)
				if r.Report.Server == nil || len(r.Report.Server.PIDs) == 0 || r.Report.Server.AfterKiB == 0 {
					t.Errorf("%s: server memory not measured: %+v", r.Name, r.Report.Server)
				}
			}
			if cmd := strings.Join(c.Runs[1].Report.Command, " "); !strings.Contains(cmd, "--hmac-secret "+redacted) || !strings.Contains(cmd, CentrifugoPath) {
				t.Errorf("centrifugo's command %q", cmd)
			}
		})
	}
}
