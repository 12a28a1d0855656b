package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// childEvent is what a child's reader goroutine passes to the parent loop.
type childEvent struct {
	idx    int
	rec    *childRecord
	exited bool
	err    error
}

// slot merges the children's progress records of one second.
type slot struct {
	p Progress
	h *hdrhistogram.Histogram
	n int
}

// parent re-executes this binary as --procs children, each on its share,
// passes their barriers together, and merges their results.
func (r *runner) parent(ctx context.Context) (*Report, error) {
	exe := r.cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: --procs: %w", err)
		}
	}
	n := r.opts.procs()
	mem := r.newMemory(ctx)
	events := make(chan childEvent)
	stdins := make([]io.WriteCloser, n)
	readers := 0
	defer func() {
		// Drain the readers of children that were started, so that every
		// goroutine ends before parent returns.
		for readers > 0 {
			if ev := <-events; ev.exited {
				readers--
			}
		}
	}()
	for i := range n {
		args := append([]string{"bench", r.sc.Name(), "--child-index", strconv.Itoa(i), "--child-count", strconv.Itoa(n)}, r.cfg.Args[1:]...)
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stderr = r.cfg.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChild, err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChild, err)
		}
		if err := cmd.Start(); err != nil {
			for _, s := range stdins[:i] {
				s.Close()
			}
			return nil, fmt.Errorf("%w: start: %w", ErrChild, err)
		}
		stdins[i] = in
		readers++
		go readChild(i, cmd, out, events)
	}

	pp := &progressPrinter{w: r.cfg.Stdout, term: r.cfg.Terminal}
	alive := n
	results := make([]*Report, n)
	var errs []string
	barriers := map[string]map[int]bool{}
	exited := map[int]bool{}
	slots := map[int]*slot{}
	var timeline []Progress
	nextSec := 1
	flush := func(all bool) {
		for len(slots) > 0 {
			s, ok := slots[nextSec]
			if !ok {
				if !all {
					return
				}
				nextSec++
				continue
			}
			if !all && s.n < alive {
				return
			}
			delete(slots, nextSec)
			nextSec++
			s.p.P50Us, s.p.P99Us = s.h.ValueAtPercentile(50), s.h.ValueAtPercentile(99)
			pp.show(s.p)
			timeline = append(timeline, s.p)
		}
	}
	release := func() {
		for name, set := range barriers {
			if len(set) < alive && len(set)+len(exited) < n {
				continue
			}
			if name == "measure" {
				mem.measure()
			}
			for i, in := range stdins {
				if !exited[i] {
					_, _ = io.WriteString(in, "go\n")
				}
			}
			delete(barriers, name)
		}
	}
	for readers > 0 {
		ev := <-events
		switch {
		case ev.exited:
			readers--
			alive--
			exited[ev.idx] = true
			stdins[ev.idx].Close()
			if ev.err != nil {
				errs = append(errs, fmt.Sprintf("child %d: %v", ev.idx, ev.err))
			}
			release()
			flush(false)
		case ev.rec.Type == "progress" && ev.rec.Progress != nil:
			p := ev.rec.Progress
			if p.Sec < nextSec {
				// A second already shown without this child; too late to add.
				continue
			}
			s := slots[p.Sec]
			if s == nil {
				s = &slot{p: Progress{Sec: p.Sec}, h: NewHistogram()}
				slots[p.Sec] = s
			}
			s.n++
			s.p.Open += p.Open
			s.p.Target += p.Target
			s.p.Ready += p.Ready
			s.p.Sent += p.Sent
			s.p.Received += p.Received
			s.p.CPU += p.CPU
			if h, err := p.Interval.Histogram(); err == nil {
				s.h.Merge(h)
			}
			flush(false)
		case ev.rec.Type == "barrier":
			set := barriers[ev.rec.Name]
			if set == nil {
				set = map[int]bool{}
				barriers[ev.rec.Name] = set
			}
			set[ev.idx] = true
			release()
		case ev.rec.Type == "result" && ev.rec.Report != nil:
			results[ev.idx] = ev.rec.Report
		}
	}
	flush(true)
	pp.end()
	parts := slices.DeleteFunc(slices.Clone(results), func(r *Report) bool { return r == nil })
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: no child reported a result: %v", ErrChild, errs)
	}
	rep, err := mergeReports(parts)
	if err != nil {
		return nil, err
	}
	rep.Timeline = timeline
	if rep.Timeline == nil {
		rep.Timeline = []Progress{}
	}
	for i, res := range results {
		if res == nil {
			errs = append(errs, fmt.Sprintf("child %d sent no result", i))
		}
	}
	rep.Errors = append(rep.Errors, errs...)
	// The load is over, even when the run was cut short: read the workers anyway.
	mem.readRuntime(context.WithoutCancel(ctx))
	mem.fill(rep)
	r.header(rep)
	rep.Procs = n
	finish(rep)
	var runErr error
	if len(errs) > 0 {
		runErr = fmt.Errorf("%w: %v", ErrChild, errs)
	}
	return rep, r.output(rep, runErr)
}

// readChild passes a child's records to the parent loop, then its exit.
func readChild(i int, cmd *exec.Cmd, out io.Reader, events chan<- childEvent) {
	br := bufio.NewReaderSize(out, 64<<10)
	var bad error
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var rec childRecord
			if jerr := json.Unmarshal(line, &rec); jerr != nil {
				if bad == nil {
					bad = fmt.Errorf("bad record: %w", jerr)
				}
			} else {
				events <- childEvent{idx: i, rec: &rec}
			}
		}
		if err != nil {
			break
		}
	}
	werr := cmd.Wait()
	if werr == nil {
		werr = bad
	}
	events <- childEvent{idx: i, exited: true, err: werr}
}
