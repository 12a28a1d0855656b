package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-gw/shoal/bench/client"
)

// Config is what Main needs from its caller.
type Config struct {
	// Args are the arguments after "bench": the scenario name, then flags.
	Args []string
	// Stdout receives progress lines and the final table (or, in a child,
	// JSON records); Stderr usage and diagnostics.
	Stdout, Stderr io.Writer
	// Stdin is where a child reads its parent's barrier releases.
	Stdin io.Reader
	// Terminal rewrites the progress line in place.
	Terminal bool
	// Executable is the binary children run (default os.Executable()); it
	// must accept "bench SCENARIO flags".
	Executable string
	// Clock defaults to SystemClock.
	Clock Clock
	// Logger receives engine errors; nil discards them.
	Logger *slog.Logger
}

// Usage is the usage text of shoal bench.
func Usage() string {
	var b strings.Builder
	b.WriteString("Usage: shoal bench SCENARIO [flags]\n       shoal bench compare --scenario SCENARIO [--targets shoal,centrifugo,gorilla,nbio,gws] [flags]\n       shoal bench sweep --scenario SCENARIO [--workers 1,2,4,8] [flags]\n\nScenarios:\n")
	for _, s := range Scenarios() {
		fmt.Fprintf(&b, "  %-8s %s\n", s.Name(), s.Summary())
	}
	b.WriteString("\ncompare runs a scenario against shoal and each peer server in turn, each started by the tool;\n")
	b.WriteString("sweep runs it against shoal serve --workers N for each N.\n")
	b.WriteString("\nRun \"shoal bench SCENARIO -h\" or \"shoal bench compare --scenario SCENARIO -h\" for the flags.\n")
	return b.String()
}

// Main runs one bench command and returns its report: alone, as a parent
// of --procs children, or as a child (--child-count).
func Main(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Args) == 0 || strings.HasPrefix(cfg.Args[0], "-") {
		fmt.Fprint(cfg.Stderr, Usage())
		if len(cfg.Args) > 0 && (cfg.Args[0] == "-h" || cfg.Args[0] == "--help" || cfg.Args[0] == "-help") {
			return nil, flag.ErrHelp
		}
		return nil, fmt.Errorf("%w: missing scenario", ErrUsage)
	}
	sc := lookup(cfg.Args[0])
	if sc == nil {
		fmt.Fprint(cfg.Stderr, Usage())
		return nil, fmt.Errorf("%w: %q", ErrUnknownScenario, cfg.Args[0])
	}
	fs := flag.NewFlagSet("bench "+sc.Name(), flag.ContinueOnError)
	fs.SetOutput(cfg.Stderr)
	var opts Options
	opts.register(fs, 5000, sc.Path())
	sc.Flags(fs)
	if err := fs.Parse(cfg.Args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	if !speaks(opts.Proto, sc.Name()) {
		return nil, fmt.Errorf("%w: a %s server has no %s scenario", ErrUsage, opts.Proto, sc.Name())
	}
	r := &runner{cfg: cfg, sc: sc, opts: &opts, flags: fs}
	switch {
	case opts.ChildCount > 0:
		return r.child(ctx)
	case opts.procs() > 1:
		return r.parent(ctx)
	default:
		return r.single(ctx)
	}
}

type runner struct {
	cfg   Config
	sc    Scenario
	opts  *Options
	flags *flag.FlagSet
}

// header fills the parts of a report every mode shares.
func (r *runner) header(rep *Report) {
	rep.Scenario = r.sc.Name()
	rep.Command = redactArgs(append([]string{"shoal", "bench"}, r.cfg.Args...))
	rep.Host = ThisHost()
	rep.Target = r.opts.URL
	rep.Options = make(map[string]any)
	r.flags.VisitAll(func(f *flag.Flag) {
		switch {
		case f.Name == "child-index" || f.Name == "child-count":
		case secretFlags[f.Name] && f.Value.String() != "":
			rep.Options[f.Name] = redacted
		default:
			rep.Options[f.Name] = f.Value.String()
		}
	})
}

// secretFlags are the flags whose values a report does not show.
var secretFlags = map[string]bool{"hmac-secret": true}

// redacted stands for a secret flag's value in a report.
const redacted = "(redacted)"

// redactArgs returns args with the values of secretFlags replaced, in
// both the --name=value and the --name value forms.
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !secretFlags[name] {
			continue
		}
		if hasVal {
			out[i] = a[:strings.IndexByte(a, '=')+1] + redacted
		} else if i+1 < len(out) {
			out[i+1] = redacted
		}
	}
	return out
}

// serverProcs resolves --server-pid and --admin into pids and roles, and
// the workers among them (with --admin).
func (r *runner) serverProcs(ctx context.Context) ([]int, []string, []WorkerRuntime, error) {
	pids, err := parsePIDs(r.opts.ServerPIDs)
	if err != nil {
		return nil, nil, nil, err
	}
	var roles []string
	for range pids {
		roles = append(roles, "server")
	}
	var workers []WorkerRuntime
	if r.opts.Admin != "" {
		list, err := adminProcs(ctx, r.opts.Admin)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, p := range list {
			pids = append(pids, p.PID)
			roles = append(roles, p.Role)
			if p.Role == "worker" {
				workers = append(workers, WorkerRuntime{PID: p.PID, Slot: p.Slot})
			}
		}
	}
	return pids, roles, workers, nil
}

// memory measures the server around a run: before at construction, after
// at the "measure" barrier; with --admin, its workers' open files at the
// barrier and their Go runtime at the end.
type memory struct {
	mu       sync.Mutex
	mem      *ServerMemory
	admin    string
	workers  []WorkerRuntime
	err      error
	cpuStart []time.Duration // at measure
	cpuWall  time.Time
}

func (r *runner) newMemory(ctx context.Context) *memory {
	pids, roles, workers, err := r.serverProcs(ctx)
	m := &memory{err: err, admin: r.opts.Admin, workers: workers}
	if err != nil || len(pids) == 0 {
		return m
	}
	before, err := rssKiB(pids)
	if err != nil {
		m.err = err
		return m
	}
	m.mem = &ServerMemory{PIDs: pids, Roles: roles, BeforeKiB: sum(before), ProcBeforeKiB: before}
	return m
}

func (m *memory) measure() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mem == nil {
		return
	}
	after, err := rssKiB(m.mem.PIDs)
	if err != nil {
		m.err = err
		return
	}
	m.mem.AfterKiB, m.mem.ProcAfterKiB = sum(after), after
	if m.cpuStart, err = procCPU(m.mem.PIDs); err != nil {
		m.err = err
		return
	}
	m.cpuWall = time.Now()
	for i := range m.workers {
		w := &m.workers[i]
		if n, err := countFDs(w.PID); err != nil {
			w.Error = err.Error()
		} else {
			w.FDs = n
		}
	}
}

// readRuntime fetches the workers' Go runtime figures and the server's CPU
// time, once the load is over.
func (m *memory) readRuntime(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mem != nil && m.cpuStart != nil {
		if end, err := procCPU(m.mem.PIDs); err != nil {
			m.err = errors.Join(m.err, err)
		} else {
			m.mem.CPUWallSec = time.Since(m.cpuWall).Seconds()
			m.mem.ProcCPUSeconds = make([]float64, len(end))
			for i := range end {
				m.mem.ProcCPUSeconds[i] = (end[i] - m.cpuStart[i]).Seconds()
				m.mem.CPUSeconds += m.mem.ProcCPUSeconds[i]
			}
		}
	}
	for i := range m.workers {
		if err := workerMemStats(ctx, m.admin, &m.workers[i]); err != nil && m.workers[i].Error == "" {
			m.workers[i].Error = err.Error()
		}
	}
}

func sum(v []int64) int64 {
	var t int64
	for _, x := range v {
		t += x
	}
	return t
}

func (m *memory) fill(rep *Report) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		rep.Errors = append(rep.Errors, m.err.Error())
	}
	if m.mem == nil {
		return
	}
	rep.Server = m.mem
	m.mem.Workers = m.workers
	if m.mem.AfterKiB > 0 && rep.Conns.Established > 0 {
		m.mem.PerConnBytes = perConnBytes(m.mem.AfterKiB-m.mem.BeforeKiB, rep.Conns.Established)
	}
	if m.mem.CPUSeconds > 0 && rep.Messages.Received > 0 {
		m.mem.CPUPerMessageUs = m.mem.CPUSeconds * 1e6 / float64(rep.Messages.Received)
	}
}

// single runs everything in this process.
func (r *runner) single(ctx context.Context) (*Report, error) {
	mem := r.newMemory(ctx)
	pp := &progressPrinter{w: r.cfg.Stdout, term: r.cfg.Terminal}
	rep, err := r.local(ctx, func(p Progress) { pp.show(p) }, func(_ context.Context, name string) error {
		if name == "measure" {
			mem.measure()
		}
		return nil
	})
	pp.end()
	if rep == nil {
		return nil, err
	}
	// The load is over, even when the run was cut short: read the workers anyway.
	mem.readRuntime(context.WithoutCancel(ctx))
	mem.fill(rep)
	r.header(rep)
	rep.Procs = 1
	finish(rep)
	return rep, r.output(rep, err)
}

// output prints the table and writes the JSON file. A run whose checks
// failed returns ErrDelivery once both are written.
func (r *runner) output(rep *Report, runErr error) error {
	runErr = errors.Join(runErr, rep.Chat.failure(rep.Messages))
	if err := rep.WriteTable(r.cfg.Stdout); err != nil {
		return err
	}
	if r.opts.JSON != "" {
		f, err := os.Create(r.opts.JSON)
		if err != nil {
			return fmt.Errorf("bench: --json: %w", err)
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return fmt.Errorf("bench: --json: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("bench: --json: %w", err)
		}
	}
	if r.opts.Plot != "" {
		if err := writeFile(r.opts.Plot, plotOf(rep).WriteSVG); err != nil {
			return fmt.Errorf("bench: --plot: %w", err)
		}
	}
	return runErr
}

// finish derives the figures that need the whole run's counts.
func finish(rep *Report) {
	finishFanout(rep)
	finishChat(rep)
	m := &rep.Messages
	if m.Seconds > 0 {
		m.SentPerSec = float64(m.Sent) / m.Seconds
		m.RecvPerSec = float64(m.Received) / max(m.Seconds, m.RecvSeconds)
	}
	for _, p := range rep.Timeline {
		rep.Self.PeakCPU = max(rep.Self.PeakCPU, p.CPU)
	}
	rep.judge()
}

// local runs the scenario on this process's share and returns its report.
// emit gets a progress record every second.
func (r *runner) local(ctx context.Context, emit func(Progress), barrier func(context.Context, string) error) (*Report, error) {
	srcs, err := r.opts.sources()
	if err != nil {
		return nil, err
	}
	workers := r.opts.Workers
	if workers <= 0 {
		workers = defaultWorkers()
	}
	eng, err := client.New(client.Config{
		URL:              r.opts.URL,
		Sources:          srcs,
		HandshakeTimeout: r.opts.HandshakeTimeout,
		Workers:          workers,
		Logger:           r.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	off, n := Share(r.opts.Conns, r.opts.ChildIndex, max(r.opts.ChildCount, 1))
	codec, err := NewCodec(CodecConfig{Proto: r.opts.Proto, HMACSecret: r.opts.HMACSecret, Offset: off, Conns: n})
	if err != nil {
		eng.Close()
		return nil, err
	}
	rep := &Report{Latency: map[string]*Latency{}, Started: time.Now(), Timeline: []Progress{}}
	env := &Env{Opts: r.opts, Engine: eng, Codec: codec, Clock: r.cfg.Clock, Log: r.cfg.Logger, Stats: &Stats{}, Report: rep, barrier: barrier}
	meter := newCPUMeter()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var tmu sync.Mutex
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastSent, lastRecv uint64
		for sec := 1; ; sec++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			p := Progress{Sec: sec, Open: int64(eng.Open()), Target: env.Stats.Target.Load(), Ready: env.Stats.Ready.Load(), CPU: meter.tick()}
			sent, recv := env.Stats.Sent.Load(), env.Stats.Received.Load()
			p.Sent, p.Received = sent-lastSent, recv-lastRecv
			lastSent, lastRecv = sent, recv
			if rec := env.mainRecorder(); rec != nil {
				h := rec.TakeInterval()
				p.P50Us, p.P99Us = h.ValueAtPercentile(50), h.ValueAtPercentile(99)
				p.Interval = SnapshotOf(h)
			}
			emit(p)
			p.Interval = nil
			tmu.Lock()
			rep.Timeline = append(rep.Timeline, p)
			tmu.Unlock()
		}
	})
	runErr := r.sc.Run(ctx, env)
	env.StopConns()
	close(stop)
	wg.Wait()

	rep.WallSec = time.Since(rep.Started).Seconds()
	c := &rep.Conns
	c.Target = env.Stats.Target.Load()
	c.Established = env.Stats.Established.Load()
	c.Failed = env.Stats.Failed.Load()
	c.Dropped = env.Stats.Dropped.Load()
	c.Failures = env.Stats.Failures()
	c.Reconnects = env.Stats.Reconnects.Load()
	c.ServerCloses = env.Stats.ServerCloses()
	env.mu.Lock()
	for name, rec := range env.recorders {
		rep.Latency[name] = Summarize(rec.Total())
	}
	env.mu.Unlock()
	cpu, share := meter.total()
	rep.Self.CPU, rep.Self.CPUSeconds, rep.Self.CPUs = share, cpu.Seconds(), meter.cpus
	rep.Self.Late += rep.Messages.Late
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		rep.Errors = append(rep.Errors, runErr.Error())
	}
	if errors.Is(runErr, ErrUsage) {
		return nil, runErr
	}
	return rep, runErr
}

// childRecord is one JSON line from a child to its parent.
type childRecord struct {
	Type     string    `json:"type"` // progress, barrier, result
	Name     string    `json:"name,omitempty"`
	Progress *Progress `json:"progress,omitempty"`
	Report   *Report   `json:"report,omitempty"`
}

// child runs this process's share and reports to the parent on stdout.
func (r *runner) child(ctx context.Context) (*Report, error) {
	var mu sync.Mutex
	enc := json.NewEncoder(r.cfg.Stdout)
	write := func(rec childRecord) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(rec)
	}
	var in *bufio.Reader
	if r.cfg.Stdin != nil {
		in = bufio.NewReader(r.cfg.Stdin)
	}
	rep, err := r.local(ctx, func(p Progress) { write(childRecord{Type: "progress", Progress: &p}) },
		func(_ context.Context, name string) error {
			write(childRecord{Type: "barrier", Name: name})
			if in == nil {
				return nil
			}
			if _, err := in.ReadString('\n'); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrBarrier, name, err)
			}
			return nil
		})
	if rep == nil {
		return nil, err
	}
	r.header(rep)
	rep.Procs = 1
	write(childRecord{Type: "result", Report: rep})
	return rep, err
}

// progressPrinter shows progress lines, in place on a terminal.
type progressPrinter struct {
	w     io.Writer
	term  bool
	dirty bool
}

func (pp *progressPrinter) show(p Progress) {
	if pp.term {
		fmt.Fprintf(pp.w, "\r%s\x1b[K", p.Line())
		pp.dirty = true
		return
	}
	fmt.Fprintln(pp.w, p.Line())
}

func (pp *progressPrinter) end() {
	if pp.dirty {
		fmt.Fprintln(pp.w)
		pp.dirty = false
	}
}

// mergeReports sums the children's reports into one.
func mergeReports(parts []*Report) (*Report, error) {
	out := &Report{Latency: map[string]*Latency{}, Timeline: []Progress{}, Conns: ConnStats{Failures: map[string]int64{}}}
	snaps := map[string][]*Snapshot{}
	for i, p := range parts {
		if i == 0 || p.Started.Before(out.Started) {
			out.Started = p.Started
		}
		out.WallSec = max(out.WallSec, p.WallSec)
		c := &out.Conns
		c.Target += p.Conns.Target
		c.Established += p.Conns.Established
		c.Failed += p.Conns.Failed
		c.Dropped += p.Conns.Dropped
		c.RampSec = max(c.RampSec, p.Conns.RampSec)
		for k, v := range p.Conns.Failures {
			c.Failures[k] += v
		}
		c.Reconnects += p.Conns.Reconnects
		for k, v := range p.Conns.ServerCloses {
			if c.ServerCloses == nil {
				c.ServerCloses = map[string]int64{}
			}
			c.ServerCloses[k] += v
		}
		m, pm := &out.Messages, p.Messages
		m.Sent += pm.Sent
		m.Received += pm.Received
		m.Expected += pm.Expected
		m.Lost += pm.Lost
		m.Duplicated += pm.Duplicated
		m.Late += pm.Late
		m.MaxLateUs = max(m.MaxLateUs, pm.MaxLateUs)
		m.Seconds = max(m.Seconds, pm.Seconds)
		m.RecvSeconds = max(m.RecvSeconds, pm.RecvSeconds)
		m.MembersWithLoss += pm.MembersWithLoss
		for name, l := range p.Latency {
			snaps[name] = append(snaps[name], l.Snapshot)
		}
		out.Self.CPUSeconds += p.Self.CPUSeconds
		out.Self.CPUs = max(out.Self.CPUs, p.Self.CPUs)
		out.Self.Late += p.Self.Late
		out.Self.DialLate += p.Self.DialLate
		out.Self.MaxDialLateUs = max(out.Self.MaxDialLateUs, p.Self.MaxDialLateUs)
		out.Errors = append(out.Errors, p.Errors...)
		if f := p.Fanout; f != nil {
			if out.Fanout == nil {
				out.Fanout = &FanoutStats{Rooms: f.Rooms, Published: make([]uint64, f.Rooms), Members: make([]int64, f.Rooms)}
			}
			o := out.Fanout
			if f.Rooms != o.Rooms || len(f.Published) != o.Rooms || len(f.Members) != o.Rooms {
				return nil, fmt.Errorf("%w: fanout rooms differ between children", ErrChild)
			}
			for room := range o.Rooms {
				o.Published[room] += f.Published[room]
				o.Members[room] += f.Members[room]
			}
			o.Received = append(o.Received, f.Received...)
			o.Gaps += f.Gaps
			o.Foreign += f.Foreign
			o.JoinSec = max(o.JoinSec, f.JoinSec)
		}
		if err := mergeChat(out, p); err != nil {
			return nil, err
		}
	}
	if out.Conns.RampSec > 0 {
		out.Conns.ConnectRate = float64(out.Conns.Established) / out.Conns.RampSec
	}
	if out.WallSec > 0 && out.Self.CPUs > 0 {
		out.Self.CPU = out.Self.CPUSeconds / out.WallSec / float64(out.Self.CPUs)
	}
	names := make([]string, 0, len(snaps))
	for n := range snaps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		h, err := MergeSnapshots(snaps[name]...)
		if err != nil {
			return nil, err
		}
		out.Latency[name] = Summarize(h)
	}
	return out, nil
}
