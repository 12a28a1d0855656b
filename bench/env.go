package bench

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/bench/client"
)

// Env is what a Scenario runs with in one bench process.
type Env struct {
	// Opts are the shared flags, for the whole run (not this process's share).
	Opts *Options
	// Engine holds this process's connections.
	Engine *client.Engine
	// Codec speaks the target's protocol (--proto).
	Codec Codec
	Clock Clock
	Log   *slog.Logger
	Stats *Stats
	// Report is this process's report; the scenario fills Messages and
	// Fanout, the runner the rest.
	Report *Report

	// Reconnect, set by the scenario before Ramp, dials a connection again
	// when the server closes it or the network drops it (see redial).
	Reconnect bool

	barrier   func(ctx context.Context, name string) error
	redials   timers
	recorders map[string]*Recorder
	main      string
	mu        sync.Mutex
}

// Stats are the live counters the progress line and the report read.
type Stats struct {
	Target      atomic.Int64
	Established atomic.Int64
	Failed      atomic.Int64
	Dropped     atomic.Int64
	Sent        atomic.Uint64
	Received    atomic.Uint64
	// Ready counts the connections whose session the scenario set up (see
	// Progress.Ready).
	Ready atomic.Int64
	// LastRecv is the clock reading of the latest message received; the
	// receive rate spans up to it, so that a server that delivers late is
	// not credited with the rate it was sent at.
	LastRecv atomic.Int64
	// Reconnects counts connections opened again after the server closed
	// them or they dropped (Env.Reconnect).
	Reconnects atomic.Int64
	// Closing is set during teardown: connections ending then are not
	// counted as dropped.
	Closing atomic.Bool

	mu       sync.Mutex
	failures map[string]int64
	closes   map[string]int64 // close frames from the server, by code
}

// ServerClose counts a close frame from the server, by its code.
func (s *Stats) ServerClose(code int) {
	s.mu.Lock()
	if s.closes == nil {
		s.closes = make(map[string]int64)
	}
	s.closes[strconv.Itoa(code)]++
	s.mu.Unlock()
}

// ServerCloses returns a copy of the close counts by code.
func (s *Stats) ServerCloses() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.closes)
}

// Got counts a message received at now.
func (s *Stats) Got(now int64) {
	s.Received.Add(1)
	s.LastRecv.Store(now)
}

// Window returns the measured window of a run that sent for d from start:
// d, or longer when the last message arrived after start+d.
func (s *Stats) Window(start int64, d time.Duration) float64 {
	if last := s.LastRecv.Load(); last-start > int64(d) {
		return float64(last-start) / 1e9
	}
	return d.Seconds()
}

// Fail counts a connection failure by cause.
func (s *Stats) Fail(cause string) {
	s.mu.Lock()
	if s.failures == nil {
		s.failures = make(map[string]int64)
	}
	s.failures[cause]++
	s.mu.Unlock()
}

// Failures returns a copy of the failure counts.
func (s *Stats) Failures() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.failures))
	for k, v := range s.failures {
		out[k] = v
	}
	return out
}

// Share returns the offset and size of this process's part of total items.
func (e *Env) Share(total int) (off, n int) {
	return Share(total, e.Opts.ChildIndex, max(e.Opts.ChildCount, 1))
}

// ShareRate returns this process's part of an aggregate rate.
func (e *Env) ShareRate(rate float64) float64 {
	_, n := Share(e.Opts.Conns, e.Opts.ChildIndex, max(e.Opts.ChildCount, 1))
	if e.Opts.Conns == 0 {
		return 0
	}
	return rate * float64(n) / float64(e.Opts.Conns)
}

// Barrier waits until every bench process has reached the barrier called
// name; the runner may measure something there (the server's memory at
// "measure").
func (e *Env) Barrier(ctx context.Context, name string) error {
	if e.barrier == nil {
		return nil
	}
	return e.barrier(ctx, name)
}

// Recorder returns the latency recorder called name, creating it. The first
// one created is the one the progress line shows.
func (e *Env) Recorder(name string) *Recorder {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.recorders[name]; ok {
		return r
	}
	if e.recorders == nil {
		e.recorders = make(map[string]*Recorder)
	}
	r := NewRecorder()
	e.recorders[name] = r
	if e.main == "" {
		e.main = name
	}
	return r
}

func (e *Env) mainRecorder() *Recorder {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recorders[e.main]
}

// ConnHandler is what a scenario handles of its connections, in the
// terms of its Codec; the ramp counts opens, failures and handshake
// latency around it. Its methods run like client.Handler's: never
// concurrently for one connection, and they must not block for long.
type ConnHandler interface {
	// Open is called once the connection is usable: its WebSocket is open
	// and the protocol's session, if it has one, established.
	Open(c *client.Conn)
	// Event is called for each event the codec decoded other than the
	// session's: joins, messages, the unexpected.
	Event(c *client.Conn, ev Event, now int64)
	// Closed is called once when the connection ended (see client.Handler).
	Closed(c *client.Conn, err error)
}

// StopConns closes every connection and waits until no handler runs, so
// that the scenario can read what its handlers counted. Calling it twice is
// safe.
func (e *Env) StopConns() {
	e.Stats.Closing.Store(true)
	e.redials.stop()
	_ = e.Engine.Close()
}

// timers runs functions after a delay, and stops and waits for them all
// at the end of a run.
type timers struct {
	mu      sync.Mutex
	stopped bool
	pending map[*time.Timer]struct{}
	wg      sync.WaitGroup
}

// after runs f after d, unless stop comes first.
func (ts *timers) after(d time.Duration, f func()) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.stopped {
		return
	}
	if ts.pending == nil {
		ts.pending = make(map[*time.Timer]struct{})
	}
	ts.wg.Add(1)
	// The function finds its timer through the channel: AfterFunc may
	// run it before returning the timer.
	self := make(chan *time.Timer, 1)
	t := time.AfterFunc(d, func() {
		defer ts.wg.Done()
		t := <-self
		ts.mu.Lock()
		delete(ts.pending, t)
		ts.mu.Unlock()
		f()
	})
	ts.pending[t] = struct{}{}
	self <- t
}

// stop cancels the functions not yet due and waits for those running.
// Calling it twice is safe.
func (ts *timers) stop() {
	ts.mu.Lock()
	ts.stopped = true
	for t := range ts.pending {
		if t.Stop() {
			ts.wg.Done()
		}
	}
	clear(ts.pending)
	ts.mu.Unlock()
	ts.wg.Wait()
}

// Connection states in a ramp, by index.
const (
	connDialed  uint8 = iota // dialed, not yet usable
	connReady                // open and its session established
	connRefused              // the server refused the session; counted as failed
)

// rampHandler is the client.Handler of a ramp's connections: it runs the
// codec's session, counts around the scenario's handler and passes it the
// decoded events.
type rampHandler struct {
	env       *Env
	inner     ConnHandler
	codec     Codec
	handshake *Recorder
	// state is written and read only by the handler of its connection,
	// or by a redial before it dials the connection again.
	state []uint8
	// redials counts a connection's redials since it was last ready; 0
	// while it was never dropped. Same ownership as state.
	redials  []uint8
	resolved atomic.Int64
	lastOpen atomic.Int64
	done     chan struct{}
	target   int64
	once     sync.Once
}

func (h *rampHandler) resolve() {
	if h.resolved.Add(1) == h.target {
		h.once.Do(func() { close(h.done) })
	}
}

func (h *rampHandler) Open(c *client.Conn) {
	ready, err := h.codec.Start(c)
	if err != nil {
		h.refuse(c, "session: "+sendCause(err))
		return
	}
	if ready {
		h.ready(c, c.Opened())
	}
}

// ready counts c as established at now: the handshake is what it took
// from the dial until the connection could be used.
func (h *rampHandler) ready(c *client.Conn, now int64) {
	h.state[c.Index()] = connReady
	if h.redials[c.Index()] > 0 {
		h.redials[c.Index()] = 0
		h.env.Stats.Reconnects.Add(1)
		h.inner.Open(c)
		return
	}
	h.env.Stats.Established.Add(1)
	h.handshake.Record(now - c.Started())
	h.lastOpen.Store(now)
	h.inner.Open(c)
	h.resolve()
}

// refuse counts c as failed for cause and closes it.
func (h *rampHandler) refuse(c *client.Conn, cause string) {
	h.state[c.Index()] = connRefused
	h.env.Stats.Failed.Add(1)
	h.env.Stats.Fail(cause)
	h.resolve()
	c.Close()
}

func (h *rampHandler) Message(c *client.Conn, op ws.OpCode, p []byte, now int64) {
	h.codec.Decode(c, op, p, now, h)
}

// Event implements EventSink: the session's events are the ramp's, the
// rest the scenario's.
func (h *rampHandler) Event(wc WireConn, ev Event, now int64) {
	c := wc.(*client.Conn)
	switch st := h.state[c.Index()]; {
	case ev.Kind == EventReady && st == connDialed:
		h.ready(c, now)
	case ev.Kind == EventRefused && st == connDialed:
		h.refuse(c, ev.Cause)
	case st == connReady:
		h.inner.Event(c, ev, now)
	}
}

func (h *rampHandler) Closed(c *client.Conn, err error) {
	switch h.state[c.Index()] {
	case connDialed:
		if h.redials[c.Index()] > 0 {
			if !h.env.Stats.Closing.Load() {
				h.env.Stats.Failed.Add(1)
				h.env.Stats.Fail("reconnect: " + client.Cause(err))
				h.redial(c.Index(), c.Target()+1, err)
			}
			break
		}
		cause := client.Cause(err)
		if c.Opened() != 0 {
			// Closed after the upgrade: the session was refused, as
			// Centrifugo does an invalid token, with close code 3500.
			cause = "session: " + cause
			var fe *client.FailError
			if errors.As(err, &fe) && fe.Cause == client.CauseClosed && fe.Err != nil {
				code, _, _ := strings.Cut(fe.Err.Error(), " ")
				cause += " " + code
			}
		}
		h.env.Stats.Failed.Add(1)
		h.env.Stats.Fail(cause)
		h.resolve()
	case connReady:
		if err != nil && !h.env.Stats.Closing.Load() {
			h.env.Stats.Dropped.Add(1)
			var ce *client.CloseError
			if errors.As(err, &ce) {
				h.env.Stats.ServerClose(ce.Code)
			}
			if h.env.Reconnect {
				h.redial(c.Index(), c.Target()+1, err)
			} else {
				h.env.Stats.Fail("dropped: " + client.Cause(err))
			}
		}
	}
	h.inner.Closed(c, err)
}

// Reconnect backoff, when the server names no delay: from the first wait,
// doubling to the last, each drawn between half and all of it so that
// connections dropped together do not come back together.
const (
	redialMin = 100 * time.Millisecond
	redialMax = 5 * time.Second
)

// redial dials connection idx again, to target next (modulo the targets
// of --url: the next gateway of a fleet), after the delay the server's
// close reason asked for ("reconnect in 1500ms", as a draining shoal
// worker says), or else after a backoff that grows while redials fail. It
// keeps trying until the run ends.
func (h *rampHandler) redial(idx, next int, err error) {
	n := h.redials[idx]
	if n < 255 {
		h.redials[idx] = n + 1
	}
	h.state[idx] = connDialed
	step := min(redialMax, redialMin<<min(n, 6))
	delay := step/2 + rand.N(step/2+1)
	var ce *client.CloseError
	if errors.As(err, &ce) && n == 0 {
		if d, ok := ce.ReconnectDelay(); ok {
			delay = d
		}
	}
	h.env.redials.after(delay, func() {
		if h.env.Stats.Closing.Load() {
			return
		}
		if _, err := h.env.Engine.DialTarget(h, idx, next); err != nil {
			if errors.Is(err, client.ErrClosed) || h.env.Stats.Closing.Load() {
				return
			}
			h.env.Stats.Failed.Add(1)
			h.env.Stats.Fail("reconnect: " + client.Cause(err))
			h.redial(idx, next+1, err)
		}
	})
}

// Ramp opens n connections at rate per second, paced open loop, with
// indexes 0..n-1, and waits until each is open or failed (or ctx is done).
// It returns the connections by index; failed dials leave nil. It records
// handshake latencies as "handshake": from the dial until the connection
// is usable, which is the checked 101 in the bench protocol and the
// connect reply in Centrifugo's. The ramp's duration and connect rate go
// in the report.
func (e *Env) Ramp(ctx context.Context, n int, rate float64, h ConnHandler) []*client.Conn {
	e.Stats.Target.Add(int64(n))
	conns := make([]*client.Conn, n)
	if n == 0 {
		return conns
	}
	rh := &rampHandler{env: e, inner: h, codec: e.Codec, handshake: e.Recorder("handshake"), state: make([]uint8, n), redials: make([]uint8, n), done: make(chan struct{}), target: int64(n)}
	start := e.Clock.Now()
	p := Pacer{Clock: e.Clock, Schedule: Schedule{Start: start, Rate: rate}, Limit: uint64(n)}
	var mu sync.Mutex
	st := p.Run(ctx, func(k uint64, _, _ int64) {
		c, err := e.Engine.Dial(rh, int(k))
		if err != nil {
			e.Stats.Failed.Add(1)
			e.Stats.Fail(client.Cause(err))
			rh.resolve()
			return
		}
		mu.Lock()
		conns[k] = c
		mu.Unlock()
	})
	e.mu.Lock()
	e.Report.Self.DialLate += st.Late
	e.Report.Self.MaxDialLateUs = max(e.Report.Self.MaxDialLateUs, st.MaxLateNs/1000)
	e.mu.Unlock()
	select {
	case <-rh.done:
	case <-ctx.Done():
	case <-time.After(e.Opts.HandshakeTimeout + 2*time.Second):
	}
	end := rh.lastOpen.Load()
	if end == 0 {
		end = e.Clock.Now()
	}
	r := &e.Report.Conns
	r.RampSec = float64(end-start) / 1e9
	if r.RampSec > 0 {
		r.ConnectRate = float64(e.Stats.Established.Load()) / r.RampSec
	}
	mu.Lock()
	defer mu.Unlock()
	return conns
}
