package bench

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shoal-gw/shoal/bench/client"
)

// fanoutScenario spreads members over rooms, has one publisher per room
// send, and measures every delivery: latency, loss and duplicates.
type fanoutScenario struct {
	rooms       int
	pubRate     float64
	size        int
	duration    time.Duration
	drain       drainFlags
	joinTimeout time.Duration
}

func (*fanoutScenario) Name() string { return "fanout" }

func (*fanoutScenario) Path() string    { return "/ws/fanout" }
func (*fanoutScenario) Units() string   { return "deliveries" }
func (*fanoutScenario) Latency() string { return "delivery" }

func (*fanoutScenario) Summary() string {
	return "--conns members in --rooms rooms; one publisher per room, --pub-rate messages per second in all; measure every delivery"
}

func (s *fanoutScenario) Flags(fs *flag.FlagSet) {
	fs.IntVar(&s.rooms, "rooms", 10, "rooms; member i joins room i mod rooms, member r publishes to room r")
	fs.Float64Var(&s.pubRate, "pub-rate", 100, "messages published per second, all rooms together (round robin)")
	fs.IntVar(&s.size, "size", 256, "message size in bytes (at least 24)")
	fs.DurationVar(&s.duration, "duration", 10*time.Second, "how long to publish")
	s.drain.register(fs, "deliveries")
	fs.DurationVar(&s.joinTimeout, "join-timeout", 30*time.Second, "how long to wait for every member's joined reply")
}

// roomName is the name of room r.
func roomName(r int) string { return "r" + strconv.Itoa(r) }

// member is one connection's accounting, written by its handler only
// (joined is read across goroutines).
type member struct {
	room    int
	joined  atomic.Bool
	track   SeqTracker
	foreign uint64
}

type fanoutHandler struct {
	env      *Env
	delivery *Recorder
	rooms    int
	off      int
	members  []member
	joined   atomic.Int64
	joinDone chan struct{}
	bad      atomic.Int64 // unexpected events
	badCause atomic.Value // the first one's cause, a string
}

func (h *fanoutHandler) Open(c *client.Conn) {
	m := &h.members[c.Index()]
	if err := h.env.Codec.Join(c, roomName(m.room)); err != nil {
		h.env.Stats.Fail("join: " + sendCause(err))
	}
}

func (h *fanoutHandler) Event(c *client.Conn, ev Event, now int64) {
	m := &h.members[c.Index()]
	switch ev.Kind {
	case EventJoined:
		if ev.Room == roomName(m.room) && !m.joined.Swap(true) {
			h.joined.Add(1)
			select {
			case h.joinDone <- struct{}{}:
			default:
			}
			return
		}
		h.unexpected("joined " + ev.Room)
	case EventMessage:
		h.env.Stats.Got(now)
		if ev.Payload.Sender != uint64(m.room) {
			m.foreign++
			return
		}
		m.track.See(ev.Payload.Seq)
		h.delivery.Record(ev.Payload.Latency(now))
	default:
		h.unexpected(ev.Cause)
	}
}

// unexpected counts an event the scenario did not ask for.
func (h *fanoutHandler) unexpected(cause string) {
	if h.bad.Add(1) == 1 {
		h.badCause.Store(cause)
	}
}

func (h *fanoutHandler) Closed(*client.Conn, error) {}

func (s *fanoutScenario) Run(ctx context.Context, env *Env) error {
	if s.size < PayloadHeader {
		return fmt.Errorf("%w: --size must be at least %d", ErrUsage, PayloadHeader)
	}
	if s.rooms <= 0 || s.rooms > env.Opts.Conns {
		return fmt.Errorf("%w: --rooms must be between 1 and --conns", ErrUsage)
	}
	if s.pubRate <= 0 {
		return fmt.Errorf("%w: --pub-rate must be positive", ErrUsage)
	}
	h := &fanoutHandler{env: env, delivery: env.Recorder("delivery"), rooms: s.rooms, joinDone: make(chan struct{}, 1)}
	off, n := env.Share(env.Opts.Conns)
	h.off = off
	h.members = make([]member, n)
	for i := range h.members {
		h.members[i].room = (off + i) % s.rooms
	}
	joinStart := time.Now()
	conns := env.Ramp(ctx, n, env.ShareRate(env.Opts.Rate), h)
	deadline := time.NewTimer(s.joinTimeout)
	defer deadline.Stop()
	for h.joined.Load() < env.Stats.Established.Load()-env.Stats.Dropped.Load() {
		select {
		case <-h.joinDone:
		case <-time.After(100 * time.Millisecond):
		case <-deadline.C:
			env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("%d members did not join within %s", env.Stats.Established.Load()-h.joined.Load(), s.joinTimeout))
			goto joined
		case <-ctx.Done():
			return ctx.Err()
		}
	}
joined:
	fs := &FanoutStats{Rooms: s.rooms, Published: make([]uint64, s.rooms), Members: make([]int64, s.rooms), JoinSec: time.Since(joinStart).Seconds()}
	env.Report.Fanout = fs
	if err := env.Barrier(ctx, "joined"); err != nil {
		return err
	}
	if err := env.Barrier(ctx, "measure"); err != nil {
		return err
	}

	// Every process walks the whole schedule and sends the messages of the
	// publishers it holds: publisher r is member r, wherever it landed.
	start := env.Clock.Now() + int64(10*time.Millisecond)
	buf := make([]byte, s.size)
	var sendErrs uint64
	p := Pacer{Clock: env.Clock, Schedule: Schedule{Start: start, Rate: s.pubRate}, End: start + int64(s.duration)}
	st := p.Run(ctx, func(k uint64, due, _ int64) {
		r := int(k % uint64(s.rooms))
		i := r - off
		if i < 0 || i >= n || conns[i] == nil || !h.members[i].joined.Load() {
			return
		}
		Payload{Time: due, Sender: uint64(r), Seq: fs.Published[r]}.Put(buf)
		if err := env.Codec.Publish(conns[i], roomName(r), buf); err != nil {
			sendErrs++
			return
		}
		fs.Published[r]++
		env.Stats.Sent.Add(1)
	})
	if err := env.Barrier(ctx, "published"); err != nil {
		return err
	}
	waitDrain(ctx, env, s.drain.quiet, s.drain.limit, func() bool {
		if env.Opts.ChildCount > 1 {
			// Other processes' publishers are not known here.
			return false
		}
		var want uint64
		for i := range h.members {
			if h.members[i].joined.Load() {
				want += fs.Published[h.members[i].room]
			}
		}
		return env.Stats.Received.Load() >= want
	})
	env.StopConns()

	m := &env.Report.Messages
	m.Late, m.MaxLateUs = st.Late, st.MaxLateNs/1000
	m.Sent = env.Stats.Sent.Load()
	m.Received = env.Stats.Received.Load()
	m.Seconds, m.RecvSeconds = s.duration.Seconds(), env.Stats.Window(start, s.duration)
	counts := make(map[[2]uint64]int64)
	for i := range h.members {
		mb := &h.members[i]
		if !mb.joined.Load() {
			continue
		}
		fs.Members[mb.room]++
		counts[[2]uint64{uint64(mb.room), mb.track.Distinct()}]++
		fs.Gaps += mb.track.Gaps
		fs.Foreign += mb.foreign
		m.Duplicated += mb.track.Dups
	}
	for k, v := range counts {
		fs.Received = append(fs.Received, DistinctCount{Room: int(k[0]), Distinct: k[1], Members: v})
	}
	if sendErrs > 0 {
		env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("%d publishes failed", sendErrs))
	}
	if b := h.bad.Load(); b > 0 {
		first, _ := h.badCause.Load().(string)
		env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("%d unexpected messages from the server, the first: %s", b, first))
	}
	return nil
}

// finishFanout counts expected deliveries and loss once the publishers'
// counts of every process are known.
func finishFanout(r *Report) {
	fs := r.Fanout
	if fs == nil {
		return
	}
	m := &r.Messages
	m.Expected, m.Lost, m.MembersWithLoss = 0, 0, 0
	for room := range fs.Rooms {
		m.Expected += uint64(fs.Members[room]) * fs.Published[room]
	}
	var distinct uint64
	for _, d := range fs.Received {
		distinct += d.Distinct * uint64(d.Members)
		if d.Distinct < fs.Published[d.Room] {
			m.MembersWithLoss += d.Members
		}
	}
	if m.Expected > distinct {
		m.Lost = m.Expected - distinct
	}
}
