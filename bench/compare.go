package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Comparison is the outcome of compare or sweep: one run of the same
// scenario per target, and each figure of each run as a ratio to the
// baseline run's. It is what --json writes.
type Comparison struct {
	Kind     string    `json:"kind"` // compare or sweep
	Scenario string    `json:"scenario"`
	Command  []string  `json:"command"`
	Host     Host      `json:"host"`
	Started  time.Time `json:"started"`
	// Baseline names the run the ratios are relative to.
	Baseline string `json:"baseline"`
	Runs     []*Run `json:"runs"`
}

// Run is one target's part of a Comparison.
type Run struct {
	// Name is the column heading: the target, or workers=N in a sweep.
	Name string `json:"name"`
	// Server is the target started: shoal or one of PeerNames.
	Server string `json:"server"`
	// Workers is shoal's --workers; 0 for a peer.
	Workers int     `json:"workers,omitempty"`
	URL     string  `json:"url,omitempty"`
	Report  *Report `json:"report,omitempty"`
	// Error says why the run failed or is incomplete.
	Error string `json:"error,omitempty"`
	// Figures are the main figures by key (see the table's rows); a figure
	// the run did not measure is absent.
	Figures map[string]float64 `json:"figures"`
	// Ratios are Figures over the baseline's, where both exist and the
	// baseline's is not zero.
	Ratios map[string]float64 `json:"ratios"`
}

// figure is one row of the comparison table.
type figure struct {
	key   string
	label string
	// value returns the figure of r, false when r did not measure it.
	value  func(r *Report) (float64, bool)
	format func(float64) string
	// noRatio marks figures a ratio says nothing about.
	noRatio bool
}

// mainLatency returns the scenario's own latency, not the handshake's
// (rtt for echo, delivery for fanout), or the handshake's when that is all
// the run measured (connect).
func mainLatency(r *Report) (string, *Latency) {
	for _, name := range slices.Sorted(maps.Keys(r.Latency)) {
		if name != "handshake" && r.Latency[name] != nil && r.Latency[name].Count > 0 {
			return name, r.Latency[name]
		}
	}
	if l := r.Latency["handshake"]; l != nil && l.Count > 0 {
		return "handshake", l
	}
	return "", nil
}

// hasMessages reports whether r's scenario sends messages.
func hasMessages(r *Report) bool { return r.Messages.Sent > 0 || r.Messages.Received > 0 }

// figures lists the table's rows for the scenario called name. Latency
// and rate labels are the scenario's own: rtt and echoes for echo.
func figures(name string) []figure {
	latName, rate := "latency", "msgs/s"
	if sc := lookup(name); sc != nil {
		if sc.Latency() != "" {
			latName = sc.Latency()
		}
		if sc.Units() != "" {
			rate = sc.Units() + "/s"
		}
	}
	fmtRate := func(v float64) string { return fmtCount(v) + "/s" }
	fmtLat := func(v float64) string { return fmtUs(int64(v)) }
	fmtInt := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	handshake := func(pick func(*Latency) int64) func(*Report) (float64, bool) {
		return func(r *Report) (float64, bool) {
			l := r.Latency["handshake"]
			if l == nil || l.Count == 0 {
				return 0, false
			}
			return float64(pick(l)), true
		}
	}
	lat := func(pick func(*Latency) int64) func(*Report) (float64, bool) {
		return func(r *Report) (float64, bool) {
			name, l := mainLatency(r)
			if l == nil || name == "handshake" {
				return 0, false
			}
			return float64(pick(l)), true
		}
	}
	msgs := func(get func(*Report) float64) func(*Report) (float64, bool) {
		return func(r *Report) (float64, bool) { return get(r), hasMessages(r) }
	}
	// The largest figure among shoal's workers, those that were read.
	worker := func(get func(WorkerRuntime) float64) func(*Report) (float64, bool) {
		return func(r *Report) (float64, bool) {
			if r.Server == nil {
				return 0, false
			}
			v, ok := 0.0, false
			for _, w := range r.Server.Workers {
				if w.Error == "" {
					v, ok = max(v, get(w)), true
				}
			}
			return v, ok
		}
	}
	return []figure{
		{key: "connect_rate", label: "connect rate", format: fmtRate, value: func(r *Report) (float64, bool) {
			return r.Conns.ConnectRate, r.Conns.RampSec > 0
		}},
		{key: "handshake_p50_us", label: "handshake p50", format: fmtLat, value: handshake(func(l *Latency) int64 { return l.P50Us })},
		{key: "handshake_p99_us", label: "handshake p99", format: fmtLat, value: handshake(func(l *Latency) int64 { return l.P99Us })},
		{key: "rss_per_conn_bytes", label: "server RSS/conn", format: fmtBytes, value: func(r *Report) (float64, bool) {
			if r.Server == nil || r.Server.AfterKiB == 0 {
				return 0, false
			}
			return r.Server.PerConnBytes, true
		}},
		{key: "worker_rss_per_conn_bytes", label: "  of which workers", format: fmtBytes, value: func(r *Report) (float64, bool) {
			if r.Server == nil || r.Conns.Established == 0 {
				return 0, false
			}
			roles, kib := r.Server.RoleGrowth()
			if i := slices.Index(roles, "worker"); i >= 0 {
				return perConnBytes(kib[i], r.Conns.Established), true
			}
			return 0, false
		}},
		{key: "worker_fds_max", label: "worker open files", format: fmtInt, value: worker(func(w WorkerRuntime) float64 { return float64(w.FDs) })},
		{key: "worker_heap_max_bytes", label: "worker heap", format: fmtBytes, value: worker(func(w WorkerRuntime) float64 { return float64(w.HeapSysKiB) * 1024 })},
		{key: "throughput_per_sec", label: rate, format: fmtRate, value: msgs(func(r *Report) float64 { return r.Messages.RecvPerSec })},
		{key: "latency_p50_us", label: latName + " p50", format: fmtLat, value: lat(func(l *Latency) int64 { return l.P50Us })},
		{key: "latency_p90_us", label: latName + " p90", format: fmtLat, value: lat(func(l *Latency) int64 { return l.P90Us })},
		{key: "latency_p99_us", label: latName + " p99", format: fmtLat, value: lat(func(l *Latency) int64 { return l.P99Us })},
		{key: "latency_p999_us", label: latName + " p99.9", format: fmtLat, value: lat(func(l *Latency) int64 { return l.P999Us })},
		{key: "latency_max_us", label: latName + " max", format: fmtLat, value: lat(func(l *Latency) int64 { return l.MaxUs })},
		{key: "server_cpu_per_msg_us", label: "server CPU/msg", format: fmtLat, value: func(r *Report) (float64, bool) {
			if r.Server == nil || r.Server.CPUPerMessageUs == 0 {
				return 0, false
			}
			return r.Server.CPUPerMessageUs, true
		}},
		{key: "gc_pause_max_us", label: "worker GC pause max", format: fmtLat, value: worker(func(w WorkerRuntime) float64 { return float64(w.PauseMaxUs) })},
		{key: "gc_cpu_max", label: "worker GC CPU", format: fmtPercent, value: worker(func(w WorkerRuntime) float64 { return w.GCCPU })},
		{key: "received", label: "received/expected", noRatio: true, format: fmtInt, value: msgs(func(r *Report) float64 { return float64(r.Messages.Received) })},
		{key: "lost", label: "lost", format: fmtInt, value: msgs(func(r *Report) float64 { return float64(r.Messages.Lost) })},
		{key: "duplicated", label: "duplicated", format: fmtInt, value: msgs(func(r *Report) float64 { return float64(r.Messages.Duplicated) })},
		{key: "conn_failures", label: "conn failures", format: fmtInt, value: func(r *Report) (float64, bool) {
			return float64(r.Conns.Failed + r.Conns.Dropped), true
		}},
		{key: "bottleneck", label: "bench bottleneck", noRatio: true, format: func(v float64) string {
			if v != 0 {
				return "WARNING"
			}
			return "no"
		}, value: func(r *Report) (float64, bool) {
			if r.Self.Bottleneck {
				return 1, true
			}
			return 0, true
		}},
	}
}

// fmtCount renders a count with a k or M suffix past 10 000.
func fmtCount(v float64) string {
	switch a := math.Abs(v); {
	case a >= 10e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case a >= 10e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

// fmtBytes renders a size in bytes.
func fmtBytes(v float64) string {
	if math.Abs(v) >= 10*1024 {
		return fmt.Sprintf("%.1f KiB", v/1024)
	}
	return fmt.Sprintf("%.0f B", v)
}

// fmtPercent renders a fraction as a percentage.
func fmtPercent(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

// fmtRatio renders a ratio as 0.62x.
func fmtRatio(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0fx", r)
	}
	return fmt.Sprintf("%.2fx", r)
}

// Compute fills every run's Figures and Ratios from its report.
func (c *Comparison) Compute() {
	figs := figures(c.Scenario)
	var base *Run
	for _, r := range c.Runs {
		r.Figures = map[string]float64{}
		r.Ratios = map[string]float64{}
		if r.Report != nil {
			for _, f := range figs {
				if v, ok := f.value(r.Report); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
					r.Figures[f.key] = v
				}
			}
			if hasMessages(r.Report) {
				// Shown beside received, so that "all received" reads at a glance.
				r.Figures["expected"] = float64(r.Report.Messages.Expected)
			}
		}
		if r.Name == c.Baseline {
			base = r
		}
	}
	if base == nil {
		return
	}
	for _, r := range c.Runs {
		for _, f := range figs {
			if f.noRatio {
				continue
			}
			v, ok := r.Figures[f.key]
			b, bok := base.Figures[f.key]
			if ok && bok && b != 0 {
				r.Ratios[f.key] = v / b
			}
		}
	}
}

// WriteTable prints the comparison: a row per figure, a column per run,
// each value followed by its ratio to the baseline's.
func (c *Comparison) WriteTable(w io.Writer) error {
	figs := figures(c.Scenario)
	tw := tabwriter.NewWriter(w, 2, 8, 3, ' ', 0)
	fmt.Fprintf(tw, "%s %s: ratios to %s\n", c.Kind, c.Scenario, c.Baseline)
	head := []string{"  figure"}
	for _, r := range c.Runs {
		head = append(head, r.Name)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, f := range figs {
		cells := []string{"  " + f.label}
		any := false
		for _, r := range c.Runs {
			v, ok := r.Figures[f.key]
			if !ok {
				cells = append(cells, "-")
				continue
			}
			any = true
			cell := f.format(v)
			if f.key == "received" {
				cell += "/" + strconv.FormatFloat(r.Figures["expected"], 'f', 0, 64)
			}
			if ratio, ok := r.Ratios[f.key]; ok && r.Name != c.Baseline {
				cell += " (" + fmtRatio(ratio) + ")"
			}
			cells = append(cells, cell)
		}
		if any {
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "ratio: the run's figure over %s's; above 1x is better for rates, worse for latencies, memory and counts.\n", c.Baseline)
	for _, r := range c.Runs {
		if r.Report != nil {
			for _, wmsg := range r.Report.Self.Warnings {
				fmt.Fprintf(w, "WARNING (%s): %s\n", r.Name, wmsg)
			}
		}
		if r.Error != "" {
			fmt.Fprintf(w, "ERROR (%s): %s\n", r.Name, r.Error)
		}
	}
	return nil
}

// WriteJSON writes c, indented.
func (c *Comparison) WriteJSON(w io.Writer) error { return writeJSON(w, c) }

// ReadComparison parses a comparison written by WriteJSON.
func ReadComparison(rd io.Reader) (*Comparison, error) {
	return readJSON[Comparison](rd, "comparison")
}

// Plot returns the comparison's plot: every run on one chart.
func (c *Comparison) Plot() *Plot {
	p := &Plot{Title: fmt.Sprintf("%s %s", c.Kind, c.Scenario)}
	for _, r := range c.Runs {
		if r.Report == nil {
			continue
		}
		s := seriesOf(r.Name, r.Report)
		if p.LatencyName == "" {
			p.LatencyName, _ = mainLatency(r.Report)
		}
		p.Series = append(p.Series, s)
	}
	return p
}

// Compare runs `shoal bench compare`: cfg.Args are the arguments after
// "compare". It runs one scenario against shoal and each peer in turn,
// each started by the tool, and returns every run with its ratios.
func Compare(ctx context.Context, cfg Config) (*Comparison, error) {
	return multi(ctx, cfg, "compare")
}

// runPlan is one run to make: which server, with how many workers.
type runPlan struct {
	name    string
	server  string
	workers int
}

// multiOptions are compare's and sweep's own flags, and the scenario's
// flags to pass on.
type multiOptions struct {
	kind     string
	scenario Scenario
	path     string // the scenario's endpoint, appended to each bench protocol target's URL
	plan     []runPlan
	baseline string
	json     string
	plot     string
	peersDir string
	// scenarioArgs are the scenario flags given, as --name=value.
	scenarioArgs []string
}

// reservedFlags are the scenario flags that compare and sweep set
// themselves, or own under the same name.
func reservedFlags() map[string]bool {
	return map[string]bool{"url": true, "admin": true, "server-pid": true, "json": true, "plot": true,
		"child-index": true, "child-count": true, "workers": true, "proto": true, "hmac-secret": true}
}

// scenarioFromArgs finds --scenario NAME among args before flag parsing,
// because the scenario decides which flags there are.
func scenarioFromArgs(args []string) string {
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "scenario" {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// parseMulti parses compare's or sweep's command line.
func parseMulti(kind string, args []string, stderr io.Writer) (*multiOptions, error) {
	fs := flag.NewFlagSet("bench "+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scName, targets, workers, urlFlag string
		mo                                = &multiOptions{kind: kind}
	)
	fs.StringVar(&scName, "scenario", "", "scenario to run: "+strings.Join(scenarioNames(), ", "))
	if kind == "compare" {
		fs.StringVar(&targets, "targets", "", "servers to run, in order, comma separated: shoal, "+strings.Join(PeerNames(), ", ")+" (default: shoal and every peer that serves the scenario, in that order)")
		fs.StringVar(&workers, "workers", "2", "shoal's worker processes")
	} else {
		fs.StringVar(&workers, "workers", "1,2,4,8", "shoal worker counts to run, comma separated")
	}
	fs.StringVar(&mo.json, "json", "", "write every run's report and the ratios as JSON to `FILE`")
	fs.StringVar(&mo.plot, "plot", "", "draw every run's latency curve and throughput on one SVG chart in `FILE`")
	fs.StringVar(&mo.peersDir, "peers-dir", "", "the bench/peers module directory (default: found from the current directory upwards)")
	fs.StringVar(&urlFlag, "url", "", "only its path is used: the endpoint appended to the address of each target that speaks the bench protocol (default: the scenario's)")

	// The scenario's flags come next, under their own names, but for those
	// compare sets itself; the client's --workers becomes --client-workers.
	name := scenarioFromArgs(args)
	sc := lookup(name)
	var opts Options
	scFlags := map[string]string{} // name here -> name in the scenario
	if sc != nil {
		tmp := flag.NewFlagSet("", flag.ContinueOnError)
		opts.register(tmp, 5000, sc.Path())
		sc.Flags(tmp)
		reserved := reservedFlags()
		tmp.VisitAll(func(f *flag.Flag) {
			switch {
			case f.Name == "workers":
				fs.Var(f.Value, "client-workers", f.Usage)
				scFlags["client-workers"] = f.Name
			case !reserved[f.Name]:
				fs.Var(f.Value, f.Name, f.Usage)
				scFlags[f.Name] = f.Name
			}
		})
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if sc == nil {
		if name == "" {
			return nil, fmt.Errorf("%w: %s needs --scenario (%s)", ErrUsage, kind, strings.Join(scenarioNames(), ", "))
		}
		return nil, fmt.Errorf("%w: %q", ErrUnknownScenario, name)
	}
	mo.scenario = sc
	mo.path = sc.Path()
	if urlFlag != "" {
		u, err := url.Parse(urlFlag)
		if err != nil || u.Path == "" {
			return nil, fmt.Errorf("%w: --url %q: want a path such as /ws/echo", ErrUsage, urlFlag)
		}
		mo.path = u.Path
	}
	fs.Visit(func(f *flag.Flag) {
		if orig, ok := scFlags[f.Name]; ok {
			mo.scenarioArgs = append(mo.scenarioArgs, "--"+orig+"="+f.Value.String())
		}
	})
	// Check the shared flags now rather than after a target has started.
	opts.URL = "ws://127.0.0.1:1" + mo.path
	if err := opts.check(); err != nil {
		return nil, err
	}
	counts, err := parseCounts(workers)
	if err != nil {
		return nil, fmt.Errorf("%w: --workers: %w", ErrUsage, err)
	}
	if kind == "compare" {
		if len(counts) != 1 {
			return nil, fmt.Errorf("%w: --workers: compare takes one count (sweep takes a list)", ErrUsage)
		}
		if targets == "" {
			targets = strings.Join(defaultTargets(sc.Name()), ",")
		}
		seen := map[string]bool{}
		for t := range strings.SplitSeq(targets, ",") {
			if t = strings.TrimSpace(t); t == "" {
				continue
			}
			if t != shoalTarget && !isPeer(t) {
				return nil, fmt.Errorf("%w: --targets: no target %q (have shoal, %s)", ErrUsage, t, strings.Join(PeerNames(), ", "))
			}
			if seen[t] {
				return nil, fmt.Errorf("%w: --targets: %q twice", ErrUsage, t)
			}
			if !serves(t, sc.Name()) {
				return nil, fmt.Errorf("%w: --targets: %s has no %s scenario", ErrUsage, t, sc.Name())
			}
			seen[t] = true
			p := runPlan{name: t, server: t}
			if t == shoalTarget {
				p.workers = counts[0]
			}
			mo.plan = append(mo.plan, p)
		}
		if len(mo.plan) == 0 {
			return nil, fmt.Errorf("%w: --targets is empty", ErrUsage)
		}
		mo.baseline = mo.plan[0].name
		if seen[shoalTarget] {
			mo.baseline = shoalTarget
		}
	} else {
		mo.plan, mo.baseline = sweepPlan(counts)
	}
	return mo, nil
}

// serves reports whether the target called name serves the scenario
// called scenario: the chat is shoal's own.
func serves(name, scenario string) bool {
	if scenario == chatName {
		return name == shoalTarget
	}
	return speaks(targetProto(name), scenario)
}

// defaultTargets are compare's targets when --targets is not given: shoal
// and every peer that serves the scenario.
func defaultTargets(scenario string) []string {
	out := []string{shoalTarget}
	for _, p := range PeerNames() {
		if serves(p, scenario) {
			out = append(out, p)
		}
	}
	return out
}

// parseCounts parses a comma list of distinct positive counts, at least one.
func parseCounts(s string) ([]int, error) {
	out, err := parseInts(s)
	if err == nil && len(out) == 0 {
		err = errors.New("no count given")
	}
	return out, err
}

func scenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name())
	}
	return out
}

// multi runs compare or sweep.
func multi(ctx context.Context, cfg Config, kind string) (*Comparison, error) {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	mo, err := parseMulti(kind, cfg.Args, cfg.Stderr)
	if err != nil {
		return nil, err
	}
	exe := cfg.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("%w: shoal: %w", ErrTarget, err)
		}
	}
	bins, cleanup, err := preparePeers(ctx, cfg, mo)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	c := &Comparison{
		Kind:     kind,
		Scenario: mo.scenario.Name(),
		Command:  append([]string{"shoal", "bench", kind}, cfg.Args...),
		Host:     ThisHost(),
		Started:  time.Now(),
		Baseline: mo.baseline,
	}
	var failed []string
	for _, p := range mo.plan {
		if ctx.Err() != nil {
			break
		}
		run, err := runOne(ctx, cfg, mo, p, exe, bins[p.server])
		c.Runs = append(c.Runs, run)
		if errors.Is(err, ErrUsage) {
			return nil, err
		}
		if run.Error != "" {
			failed = append(failed, run.Name)
		}
	}
	c.Compute()
	fmt.Fprintln(cfg.Stdout)
	if err := c.WriteTable(cfg.Stdout); err != nil {
		return c, err
	}
	if mo.json != "" {
		if err := writeFile(mo.json, c.WriteJSON); err != nil {
			return c, fmt.Errorf("bench: --json: %w", err)
		}
	}
	if mo.plot != "" {
		if err := writeFile(mo.plot, c.Plot().WriteSVG); err != nil {
			return c, fmt.Errorf("bench: --plot: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return c, err
	}
	if len(failed) > 0 {
		return c, fmt.Errorf("%w: %s", ErrTarget, strings.Join(failed, ", "))
	}
	return c, nil
}

// preparePeers builds the peers the plan needs into a temporary directory
// that cleanup removes.
func preparePeers(ctx context.Context, cfg Config, mo *multiOptions) (map[string]string, func(), error) {
	var names []string
	for _, p := range mo.plan {
		if isPeer(p.server) {
			names = append(names, p.server)
		}
	}
	if len(names) == 0 {
		return nil, func() {}, nil
	}
	dir := mo.peersDir
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrPeers, err)
		}
		if dir, err = FindPeersDir(wd); err != nil {
			return nil, nil, err
		}
	}
	binDir, err := os.MkdirTemp("", "shoal-bench-peers-")
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrPeers, err)
	}
	cleanup := func() { os.RemoveAll(binDir) }
	note := ""
	if slices.Contains(names, centrifugoTarget) {
		note = " (the first build of Centrifugo on a machine takes a few minutes)"
	}
	fmt.Fprintf(cfg.Stdout, "building %s from %s%s\n", strings.Join(names, ", "), dir, note)
	bins, err := BuildPeers(ctx, dir, binDir, names)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return bins, cleanup, nil
}

// runOne starts the plan's target, runs the scenario against it, and stops it.
func runOne(ctx context.Context, cfg Config, mo *multiOptions, p runPlan, exe, peerBin string) (*Run, error) {
	run := &Run{Name: p.name, Server: p.server, Workers: p.workers}
	var (
		t   *Target
		err error
	)
	switch p.server {
	case shoalTarget:
		t, err = StartShoalConfig(ctx, exe, shoalFor(mo.scenario.Name(), p.workers))
	case centrifugoTarget:
		t, err = StartCentrifugo(ctx, peerBin, CentrifugoConfig{})
	default:
		t, err = StartPeer(ctx, p.server, peerBin)
	}
	if err != nil {
		run.Error = err.Error()
		fmt.Fprintf(cfg.Stdout, "== %s: not started: %v ==\n", p.name, err)
		return run, err
	}
	run.URL = t.URL
	fmt.Fprintf(cfg.Stdout, "== %s (%s) ==\n", p.name, t.URL)
	// A Centrifugo server has one endpoint for every scenario; --url's
	// path is the bench protocol's.
	path := mo.path
	if t.Proto == ProtoCentrifugo {
		path = CentrifugoPath
	}
	args := []string{mo.scenario.Name(), "--url", t.URL + path}
	args = append(args, t.Args...)
	if t.Admin != "" {
		args = append(args, "--admin", t.Admin)
	} else {
		args = append(args, "--server-pid", strconv.Itoa(t.PID))
	}
	args = append(args, mo.scenarioArgs...)
	rep, runErr := Main(ctx, Config{
		Args:       args,
		Stdout:     cfg.Stdout,
		Stderr:     cfg.Stderr,
		Stdin:      cfg.Stdin,
		Terminal:   cfg.Terminal,
		Executable: exe,
		Clock:      cfg.Clock,
		Logger:     cfg.Logger,
	})
	stopErr := t.Stop()
	run.Report = rep
	var msgs []string
	if runErr != nil {
		msgs = append(msgs, runErr.Error())
	}
	if stopErr != nil {
		msgs = append(msgs, stopErr.Error())
	}
	run.Error = strings.Join(msgs, "; ")
	return run, errors.Join(runErr, stopErr)
}

// writeFile creates path and writes it with write.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
