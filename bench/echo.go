package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/bench/client"
)

// echoScenario sends messages open loop at an aggregate rate and measures
// each round trip from the time the message was due.
type echoScenario struct {
	msgRate  float64
	size     int
	duration time.Duration
	drain    drainFlags
}

func (*echoScenario) Name() string { return "echo" }

func (*echoScenario) Path() string    { return "/ws/echo" }
func (*echoScenario) Units() string   { return "echoes" }
func (*echoScenario) Latency() string { return "rtt" }

func (*echoScenario) Summary() string {
	return "send --msg-rate messages per second over --conns connections for --duration; measure round trips"
}

func (s *echoScenario) Flags(fs *flag.FlagSet) {
	fs.Float64Var(&s.msgRate, "msg-rate", 1000, "messages per second, all connections together")
	fs.IntVar(&s.size, "size", 64, "message size in bytes (at least 24)")
	fs.DurationVar(&s.duration, "duration", 10*time.Second, "how long to send")
	s.drain.register(fs, "echoes")
}

// echoConn is the accounting of one connection: sent is written by its
// pacer only, track by its handler only.
type echoConn struct {
	sent  uint64
	track SeqTracker
	other uint64 // echoes of another sender's messages
}

type echoHandler struct {
	env   *Env
	rtt   *Recorder
	off   int
	conns []echoConn
}

func (h *echoHandler) Open(*client.Conn) {}

func (h *echoHandler) Event(c *client.Conn, ev Event, now int64) {
	if ev.Kind != EventMessage {
		return
	}
	pl := ev.Payload
	ec := &h.conns[c.Index()]
	if pl.Sender != uint64(h.off+c.Index()) {
		ec.other++
		return
	}
	ec.track.See(pl.Seq)
	h.rtt.Record(pl.Latency(now))
	h.env.Stats.Got(now)
}

func (h *echoHandler) Closed(*client.Conn, error) {}

func (s *echoScenario) Run(ctx context.Context, env *Env) error {
	if s.size < PayloadHeader {
		return fmt.Errorf("%w: --size must be at least %d", ErrUsage, PayloadHeader)
	}
	if s.msgRate <= 0 {
		return fmt.Errorf("%w: --msg-rate must be positive", ErrUsage)
	}
	h := &echoHandler{env: env, rtt: env.Recorder("rtt")}
	off, n := env.Share(env.Opts.Conns)
	h.off = off
	h.conns = make([]echoConn, n)
	conns := env.Ramp(ctx, n, env.ShareRate(env.Opts.Rate), h)
	if err := env.Barrier(ctx, "ramped"); err != nil {
		return err
	}
	if err := env.Barrier(ctx, "measure"); err != nil {
		return err
	}

	rate := env.ShareRate(s.msgRate)
	start := env.Clock.Now() + int64(10*time.Millisecond)
	end := start + int64(s.duration)
	// Each pacer owns the connections i ≡ g (mod pacers) and the messages
	// k ≡ g (mod pacers) of the one schedule, so a connection's sequence
	// numbers go out in order from one goroutine.
	pacers := max(1, min(runtime.GOMAXPROCS(0), n))
	stats := make([]PaceStats, pacers)
	var sendErrs sync.Map
	var wg sync.WaitGroup
	for g := range pacers {
		owned := (n - g + pacers - 1) / pacers
		wg.Go(func() {
			buf := make([]byte, s.size)
			p := Pacer{Clock: env.Clock, Schedule: Schedule{Start: start, Rate: rate}, First: uint64(g), Step: uint64(pacers), End: end}
			stats[g] = p.Run(ctx, func(k uint64, due, _ int64) {
				i := g + pacers*int((k/uint64(pacers))%uint64(owned))
				c := conns[i]
				if c == nil {
					return
				}
				ec := &h.conns[i]
				Payload{Time: due, Sender: uint64(off + i), Seq: ec.sent}.Put(buf)
				// Only the bench protocol has an echo (see speaks): the
				// message goes out as it is.
				if err := c.Send(ws.OpBinary, buf); err != nil {
					v, _ := sendErrs.LoadOrStore(sendCause(err), new(atomic.Uint64))
					v.(*atomic.Uint64).Add(1)
					return
				}
				ec.sent++
				env.Stats.Sent.Add(1)
			})
		})
	}
	wg.Wait()
	waitDrain(ctx, env, s.drain.quiet, s.drain.limit, func() bool { return env.Stats.Received.Load() >= env.Stats.Sent.Load() })
	env.StopConns()

	m := &env.Report.Messages
	for _, st := range stats {
		m.Late += st.Late
		m.MaxLateUs = max(m.MaxLateUs, st.MaxLateNs/1000)
	}
	m.Sent = env.Stats.Sent.Load()
	m.Received = env.Stats.Received.Load()
	m.Expected = m.Sent
	for i := range h.conns {
		ec := &h.conns[i]
		if d := ec.track.Distinct(); ec.sent > d {
			m.Lost += ec.sent - d
			m.MembersWithLoss++
		}
		m.Duplicated += ec.track.Dups
	}
	m.Seconds, m.RecvSeconds = s.duration.Seconds(), env.Stats.Window(start, s.duration)
	sendErrs.Range(func(k, v any) bool {
		env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("send failed (%s): %d", k, v.(*atomic.Uint64).Load()))
		return true
	})
	return nil
}

// sendCause names why a Send failed.
func sendCause(err error) string {
	switch {
	case errors.Is(err, client.ErrQueueFull):
		return "write queue full"
	case errors.Is(err, client.ErrClosed):
		return "connection closed"
	}
	return err.Error()
}

// drainFlags are --drain and --drain-limit, the wait for the last
// messages once sending stopped.
type drainFlags struct {
	quiet, limit time.Duration
}

// register adds the flags; what names the messages waited for.
func (d *drainFlags) register(fs *flag.FlagSet, what string) {
	fs.DurationVar(&d.quiet, "drain", 3*time.Second, "once sending stops, how long a silence ends the wait for the last "+what+" (those missing then count as lost)")
	fs.DurationVar(&d.limit, "drain-limit", 2*time.Minute, "the longest wait for the last "+what)
}

// waitDrain waits, once sending stopped, until done reports that every
// message arrived, or until nothing arrived for quiet, or for at most
// limit. A server that is still delivering, however late, keeps the bench
// waiting, so that what counts as lost was lost and not merely slow.
// When limit ends a wait that was still receiving, it says so in the
// report.
func waitDrain(ctx context.Context, env *Env, quiet, limit time.Duration, done func() bool) {
	deadline := time.Now().Add(limit)
	last, still := env.Stats.Received.Load(), time.Now()
	for !done() && ctx.Err() == nil {
		if !time.Now().Before(deadline) {
			env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("still receiving when --drain-limit %s ran out: some of the messages counted lost may only be late", limit))
			return
		}
		env.Clock.Sleep(ctx, 10*time.Millisecond)
		if r := env.Stats.Received.Load(); r != last {
			last, still = r, time.Now()
		} else if time.Since(still) > quiet {
			return
		}
	}
}
