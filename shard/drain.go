package shard

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"
)

// DefaultDrainWindow is the time over which a draining shard spreads the
// close frames to its clients.
const DefaultDrainWindow = 5 * time.Second

const (
	// drainTick spaces the batches of a drain.
	drainTick = 100 * time.Millisecond
	// drainBatchMin is the smallest batch: a shard with few clients closes
	// them at once, since a few hundred reconnects are no storm.
	drainBatchMin = 64
	// minReconnectJitter bounds from below the spread of the reconnect
	// delays told to clients, for drains whose window is short or off.
	minReconnectJitter = time.Second
)

// ReconnectReason is the close reason a draining shard sends: what
// happens, then "reconnect in <N>ms", the delay after which the client
// should reconnect. Clients read the delay from the "reconnect in" phrase
// (the chat page and shoal bench do), so the text before it may change.
func ReconnectReason(what string, delay time.Duration) string {
	return what + ", reconnect in " + strconv.FormatInt(delay.Milliseconds(), 10) + "ms"
}

// drainWindow is the window for a drain bounded by ctx: the configured
// one, shortened so that the last close frames still leave the clients
// CloseTimeout to answer before ctx ends.
func (s *Shard) drainWindow(ctx context.Context) time.Duration {
	w := s.cfg.DrainWindow
	if dl, ok := ctx.Deadline(); ok {
		w = min(w, time.Until(dl)-s.cfg.CloseTimeout)
	}
	return max(w, 0)
}

// goAwayAll sends every client a close frame with code, in batches spread
// over the drain window, each with a reason that asks its client to wait a
// random delay before it reconnects. Clients of a worker that drains all
// at once would otherwise reconnect all at once, to the other workers and
// hosts, which then take a storm of handshakes; spread over the window and
// over the delays, they come back at a rate the fleet takes in its stride.
// It returns once every client present at the start has been told, or
// ctx is done.
func (s *Shard) goAwayAll(ctx context.Context, code int, what string) {
	window := s.drainWindow(ctx)
	jitter := max(window, minReconnectJitter)
	conns := s.snapshot() // map order: a random one, so batches mix rooms and users
	start := time.Now()
	t := time.NewTicker(drainTick)
	defer t.Stop()
	for told := 0; told < len(conns); {
		// The clients due by the end of this tick, at an even rate over
		// the window, but never fewer than one batch.
		due := len(conns)
		if elapsed := time.Since(start) + drainTick; window > 0 && elapsed < window {
			due = int(int64(len(conns)) * int64(elapsed) / int64(window))
			due = min(len(conns), max(due, told+drainBatchMin))
		}
		for _, c := range conns[told:due] {
			c.goAway(code, ReconnectReason(what, rand.N(jitter)))
		}
		told = due
		if told == len(conns) {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// waitEmpty polls until no connection is left or ctx ends. A connection
// whose handshake finished after the drain began is told to go away too.
func (s *Shard) waitEmpty(ctx context.Context, code int, what string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for i := 1; s.Conns() > 0; i++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if i%10 == 0 {
			for _, c := range s.snapshot() {
				if c.isOpen() {
					c.goAway(code, ReconnectReason(what, rand.N(minReconnectJitter)))
				}
			}
		}
	}
	return nil
}
