package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one run, written as JSON by --json and printed
// as a table. Latencies are in microseconds.
type Report struct {
	Scenario string         `json:"scenario"`
	Command  []string       `json:"command"`
	Host     Host           `json:"host"`
	Target   string         `json:"target"`
	Options  map[string]any `json:"options"`
	Started  time.Time      `json:"started"`
	WallSec  float64        `json:"wall_seconds"`
	Procs    int            `json:"procs"`

	Conns    ConnStats           `json:"conns"`
	Messages MessageStats        `json:"messages"`
	Latency  map[string]*Latency `json:"latency"`
	Server   *ServerMemory       `json:"server,omitempty"`
	Self     SelfCheck           `json:"self"`
	Fanout   *FanoutStats        `json:"fanout,omitempty"`
	Chat     *ChatStats          `json:"chat,omitempty"`
	Timeline []Progress          `json:"timeline"`
	Errors   []string            `json:"errors,omitempty"`
}

// ConnStats counts connections.
type ConnStats struct {
	Target      int64            `json:"target"`
	Established int64            `json:"established"`
	Failed      int64            `json:"failed"`
	Dropped     int64            `json:"dropped"` // ended by the server or the network after opening
	Failures    map[string]int64 `json:"failures"`
	// Reconnects counts connections opened again after they dropped
	// (connect --reconnect); ServerCloses the close frames the server
	// sent, by code.
	Reconnects   int64            `json:"reconnects,omitempty"`
	ServerCloses map[string]int64 `json:"server_closes,omitempty"`
	// RampSec is the time from the first dial to the last connection
	// resolved; ConnectRate the established connections per second over it.
	RampSec     float64 `json:"ramp_seconds"`
	ConnectRate float64 `json:"connect_rate"`
}

// MessageStats counts messages. For echo, Received are echoes; for fanout,
// deliveries (one message reaching one member).
type MessageStats struct {
	Sent       uint64  `json:"sent"`
	Received   uint64  `json:"received"`
	Expected   uint64  `json:"expected"`
	Lost       uint64  `json:"lost"`
	Duplicated uint64  `json:"duplicated"`
	Late       uint64  `json:"late"` // sent more than 10ms after due
	MaxLateUs  int64   `json:"max_late_us"`
	Seconds    float64 `json:"seconds"` // the send window
	// RecvSeconds runs from the start of sending to the last receipt, at
	// least Seconds: a server that falls behind delivers over a longer
	// window than the one it was sent in.
	RecvSeconds float64 `json:"receive_seconds"`
	SentPerSec  float64 `json:"sent_per_second"`
	RecvPerSec  float64 `json:"received_per_second"`
	// MembersWithLoss counts receivers that missed at least one message.
	MembersWithLoss int64 `json:"members_with_loss"`
}

// ServerMemory is the server's resident memory around a run, and the CPU
// time it spent under the load.
type ServerMemory struct {
	PIDs      []int    `json:"pids"`
	Roles     []string `json:"roles,omitempty"`
	BeforeKiB int64    `json:"before_kib"`
	AfterKiB  int64    `json:"after_kib"`
	// PerConnBytes is (after - before) / established connections.
	PerConnBytes float64 `json:"per_conn_bytes"`
	// ProcBeforeKiB and ProcAfterKiB are each process's share, in the
	// order of PIDs.
	ProcBeforeKiB []int64 `json:"proc_before_kib,omitempty"`
	ProcAfterKiB  []int64 `json:"proc_after_kib,omitempty"`
	// Workers are shoal's worker processes, with --admin.
	Workers []WorkerRuntime `json:"workers,omitempty"`
	// CPUSeconds is the user and system time of the server's processes
	// from the "measure" point (the load about to start) to the load's
	// end, CPUWallSec long; ProcCPUSeconds each one's, in PIDs' order.
	CPUSeconds     float64   `json:"cpu_seconds,omitempty"`
	ProcCPUSeconds []float64 `json:"proc_cpu_seconds,omitempty"`
	CPUWallSec     float64   `json:"cpu_wall_seconds,omitempty"`
	// CPUPerMessageUs is CPUSeconds over the messages received, in µs:
	// what the whole server spent per delivery, bus and services included.
	CPUPerMessageUs float64 `json:"cpu_per_message_us,omitempty"`
}

// RoleCPU returns the CPU seconds of the processes of each role, roles in
// order of first appearance.
func (s *ServerMemory) RoleCPU() (roles []string, sec []float64) {
	if len(s.ProcCPUSeconds) != len(s.PIDs) || len(s.Roles) != len(s.PIDs) {
		return nil, nil
	}
	return byRole(s.Roles, s.ProcCPUSeconds)
}

// byRole sums each process's figure by its role, roles in order of first
// appearance.
func byRole[T int64 | float64](procRoles []string, v []T) (roles []string, sums []T) {
	at := map[string]int{}
	for i, role := range procRoles {
		j, ok := at[role]
		if !ok {
			j = len(roles)
			at[role] = j
			roles = append(roles, role)
			sums = append(sums, 0)
		}
		sums[j] += v[i]
	}
	return roles, sums
}

// RoleGrowth returns the growth in KiB of the processes of each role,
// roles in order of first appearance.
func (s *ServerMemory) RoleGrowth() (roles []string, kib []int64) {
	if len(s.ProcAfterKiB) != len(s.PIDs) || len(s.ProcBeforeKiB) != len(s.PIDs) || len(s.Roles) != len(s.PIDs) {
		return nil, nil
	}
	growth := make([]int64, len(s.PIDs))
	for i := range growth {
		growth[i] = s.ProcAfterKiB[i] - s.ProcBeforeKiB[i]
	}
	return byRole(s.Roles, growth)
}

// SelfCheck is the tool's judgement of itself.
type SelfCheck struct {
	// CPU is the bench processes' CPU time over wall time and the CPUs
	// they may use, 0..1; PeakCPU the highest one-second figure.
	CPU     float64 `json:"cpu"`
	PeakCPU float64 `json:"peak_cpu"`
	CPUs    int     `json:"cpus"`
	// CPUSeconds is the CPU time the bench processes used.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Late counts sends more than 10ms behind schedule; DialLate the
	// connections dialed that late during the ramp.
	Late          uint64 `json:"late"`
	DialLate      uint64 `json:"dial_late"`
	MaxDialLateUs int64  `json:"max_dial_late_us"`
	// Bottleneck is set when a warning says the figures are the tool's.
	Bottleneck bool     `json:"bottleneck"`
	Warnings   []string `json:"warnings,omitempty"`
}

// Progress is one second of a run, as shown live and kept for plots.
type Progress struct {
	Sec      int     `json:"t"`
	Open     int64   `json:"open"`
	Target   int64   `json:"target"`
	Sent     uint64  `json:"sent"`     // in this second
	Received uint64  `json:"received"` // in this second
	P50Us    int64   `json:"p50_us"`
	P99Us    int64   `json:"p99_us"`
	CPU      float64 `json:"cpu"`
	// Ready counts the connections whose session the scenario set up, for
	// a scenario with one of its own (chat: users logged in and in all
	// their rooms); 0 for the others.
	Ready int64 `json:"ready,omitempty"`
	// Interval is the second's latency histogram, carried from children to
	// the parent; it is not kept in a report's timeline.
	Interval *Snapshot `json:"interval,omitempty"`
}

// Line is the progress line: "12s conns 10000/10000 msgs/s 50123 p50 1.2ms p99 4.8ms".
func (p Progress) Line() string {
	p50, p99 := "-", "-"
	if p.P99Us > 0 {
		p50, p99 = fmtUs(p.P50Us), fmtUs(p.P99Us)
	}
	ready := ""
	if p.Ready > 0 {
		ready = fmt.Sprintf(" ready %d", p.Ready)
	}
	return fmt.Sprintf("%ds conns %d/%d%s msgs/s %d p50 %s p99 %s", p.Sec, p.Open, p.Target, ready, p.Received, p50, p99)
}

// fmtUs renders microseconds at a readable scale.
func fmtUs(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.1fms", float64(us)/1e3)
	default:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	}
}

// FanoutStats carries what the fanout scenario needs to count loss across
// processes: what each room's publisher sent and what its members got.
type FanoutStats struct {
	Rooms     int      `json:"rooms"`
	Published []uint64 `json:"published"` // per room
	Members   []int64  `json:"members"`   // joined members per room
	// Received lists, per room, how many members saw how many distinct
	// messages; a member saw all when Distinct equals Published[Room].
	Received []DistinctCount `json:"received"`
	Gaps     uint64          `json:"gaps"`
	Foreign  uint64          `json:"foreign"` // from a sender not of the member's room
	JoinSec  float64         `json:"join_seconds"`
}

// DistinctCount is Members members of Room that saw Distinct messages.
type DistinctCount struct {
	Room     int    `json:"room"`
	Distinct uint64 `json:"distinct"`
	Members  int64  `json:"members"`
}

// WriteJSON writes r, indented.
func (r *Report) WriteJSON(w io.Writer) error { return writeJSON(w, r) }

// ReadReport parses a report written by WriteJSON.
func ReadReport(rd io.Reader) (*Report, error) { return readJSON[Report](rd, "report") }

// writeJSON writes v as indented JSON, the form of every file the bench
// writes.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// readJSON parses a T written by writeJSON; what names it in errors.
func readJSON[T any](rd io.Reader, what string) (*T, error) {
	var v T
	if err := json.NewDecoder(rd).Decode(&v); err != nil {
		return nil, fmt.Errorf("bench: read %s: %w", what, err)
	}
	return &v, nil
}

// perConnBytes spreads kib over conns, in bytes.
func perConnBytes(kib, conns int64) float64 { return float64(kib) * 1024 / float64(conns) }

// WriteTable prints r for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "  %s\t"+f+"\n", append([]any{k}, a...)...) }
	fmt.Fprintf(tw, "%s against %s (%d process(es), %.1fs)\n", r.Scenario, r.Target, r.Procs, r.WallSec)
	c := r.Conns
	row("connections", "%d of %d established, %d failed, %d dropped", c.Established, c.Target, c.Failed, c.Dropped)
	if c.RampSec > 0 {
		row("connect rate", "%.0f/s over %.2fs", c.ConnectRate, c.RampSec)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Failures)) {
		row("  failed: "+k, "%d", c.Failures[k])
	}
	if len(c.ServerCloses) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(c.ServerCloses)) {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, c.ServerCloses[k]))
		}
		row("closed by the server", "%s", strings.Join(parts, ", "))
	}
	if c.Reconnects > 0 || r.Options["reconnect"] == "true" {
		row("reconnected", "%d", c.Reconnects)
	}
	if m := r.Messages; m.Sent > 0 || m.Received > 0 {
		row("messages", "%d sent, %d received, %d expected", m.Sent, m.Received, m.Expected)
		row("rates", "%.0f sent/s over %.1fs, %.0f received/s over %.1fs", m.SentPerSec, m.Seconds, m.RecvPerSec, m.RecvSeconds)
		row("lost / duplicated", "%d / %d (members with loss: %d)", m.Lost, m.Duplicated, m.MembersWithLoss)
		row("sent late (>10ms)", "%d (max %s)", m.Late, fmtUs(m.MaxLateUs))
	}
	if r.Chat != nil {
		r.Chat.rows(row)
	}
	for _, name := range slices.Sorted(maps.Keys(r.Latency)) {
		l := r.Latency[name]
		row(name+" latency", "n %d  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", l.Count,
			fmtUs(l.P50Us), fmtUs(l.P90Us), fmtUs(l.P99Us), fmtUs(l.P999Us), fmtUs(l.MaxUs))
	}
	if s := r.Server; s != nil {
		row("server RSS", "%d KiB -> %d KiB (pids %v): %.0f bytes/conn", s.BeforeKiB, s.AfterKiB, s.PIDs, s.PerConnBytes)
		if roles, kib := s.RoleGrowth(); len(roles) > 1 {
			var parts []string
			for i, role := range roles {
				part := fmt.Sprintf("%s %+d KiB", role, kib[i])
				if r.Conns.Established > 0 {
					part += fmt.Sprintf(" (%.0f B/conn)", perConnBytes(kib[i], r.Conns.Established))
				}
				parts = append(parts, part)
			}
			row("  by role", "%s", strings.Join(parts, ", "))
		}
		for _, w := range s.Workers {
			if w.Error != "" {
				row(fmt.Sprintf("  worker %d", w.Slot), "pid %d: %s", w.PID, w.Error)
				continue
			}
			row(fmt.Sprintf("  worker %d", w.Slot), "pid %d: %d open files, heap %d KiB, %d GCs, pauses max %s total %s, GC CPU %.2f%%",
				w.PID, w.FDs, w.HeapSysKiB, w.NumGC, fmtUs(w.PauseMaxUs), fmtUs(w.PauseTotalUs), 100*w.GCCPU)
		}
	}
	if s := r.Server; s != nil && s.CPUWallSec > 0 {
		line := fmt.Sprintf("%.1f s over %.1f s (%.0f%% of one CPU)", s.CPUSeconds, s.CPUWallSec, 100*s.CPUSeconds/s.CPUWallSec)
		if s.CPUPerMessageUs > 0 {
			line += fmt.Sprintf(", %.1f µs per message received", s.CPUPerMessageUs)
		}
		if roles, sec := s.RoleCPU(); len(roles) > 1 {
			var parts []string
			for i, role := range roles {
				parts = append(parts, fmt.Sprintf("%s %.1f s", role, sec[i]))
			}
			line += "; " + strings.Join(parts, ", ")
		}
		row("server CPU", "%s", line)
	}
	row("bench CPU", "%.0f%% of %d CPU(s) (peak second %.0f%%)", 100*r.Self.CPU, r.Self.CPUs, 100*r.Self.PeakCPU)
	for _, e := range r.Errors {
		row("error", "%s", e)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, wmsg := range r.Self.Warnings {
		if _, err := fmt.Fprintln(w, "WARNING: "+wmsg); err != nil {
			return err
		}
	}
	return nil
}

// judge fills the self-check warnings from the figures.
func (r *Report) judge() {
	s := &r.Self
	s.Warnings = s.Warnings[:0]
	if s.CPU > 0.9 {
		s.Warnings = append(s.Warnings, fmt.Sprintf("bench CPU at %.0f%% of %d CPU(s): the tool may be the bottleneck, not the server", 100*s.CPU, s.CPUs))
	}
	if s.Late > 0 {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d sends were more than 10ms behind schedule (max %s): the bench fell behind its schedule (its own CPU, or CPUs shared with the server); their delay is counted in the latencies", s.Late, fmtUs(r.Messages.MaxLateUs)))
	}
	if s.DialLate > 0 {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d connections were dialed more than 10ms behind the ramp's schedule (max %s): the bench fell behind its ramp (its own CPU, or CPUs shared with the server)", s.DialLate, fmtUs(s.MaxDialLateUs)))
	}
	s.Bottleneck = len(s.Warnings) > 0
}
