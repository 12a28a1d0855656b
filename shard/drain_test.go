package shard

import (
	"context"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// A drain spreads its close frames over the window in batches, and each
// reason carries a reconnect delay of its own within the window.
func TestDrainWindowSpreadsCloses(t *testing.T) {
	const n, window = 5 * drainBatchMin, time.Second
	h := startShard(t, func(c *Config) { c.DrainWindow = window })
	clients := make([]*testClient, n)
	for i := range clients {
		clients[i] = dialWS(t, h.addr, "/ws/echo")
	}
	waitFor(t, "all connections", func() bool { return h.s.Conns() == n })
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- h.s.Shutdown(context.Background()) }()
	var (
		mu      sync.Mutex
		last    time.Time
		reasons []string
		wg      sync.WaitGroup
	)
	for _, c := range clients {
		wg.Go(func() {
			reason := c.expectClose(1001)
			mu.Lock()
			defer mu.Unlock()
			reasons = append(reasons, reason)
			if now := time.Now(); now.After(last) {
				last = now
			}
		})
	}
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Five batches of drainBatchMin, one per tick: the last cannot have
	// been sent before four ticks passed.
	if took := last.Sub(start); took < 4*drainTick {
		t.Errorf("the last close frame came %v after the drain began; batches one tick apart take at least %v", took, 4*drainTick)
	}
	re := regexp.MustCompile(`^server shutting down, reconnect in (\d+)ms$`)
	delays := make(map[int]bool)
	for _, r := range reasons {
		m := re.FindStringSubmatch(r)
		if m == nil {
			t.Fatalf("close reason %q does not carry a reconnect delay", r)
		}
		ms, _ := strconv.Atoi(m[1])
		if ms < 0 || ms > int(window.Milliseconds()) {
			t.Errorf("reconnect delay %dms outside the window of %v", ms, window)
		}
		delays[ms] = true
	}
	// 320 draws from 1000 values: fewer than 100 distinct would be no jitter.
	if len(delays) < 100 {
		t.Errorf("%d distinct reconnect delays among %d clients: no jitter", len(delays), n)
	}
}

// The window is cut short so that the last clients still have the close
// timeout to answer before the drain's deadline.
func TestDrainWindowFitsTheDeadline(t *testing.T) {
	h := startShard(t, func(c *Config) { c.DrainWindow = time.Minute; c.CloseTimeout = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if w := h.s.drainWindow(ctx); w > 2*time.Second || w < time.Second {
		t.Errorf("window %v for a deadline 3s away and a close timeout of 1s, want about 2s", w)
	}
	off := startShard(t, func(c *Config) { c.DrainWindow = -1 })
	if w := off.s.drainWindow(context.Background()); w != 0 {
		t.Errorf("a negative window is %v, want 0: all at once", w)
	}
	if w := startShard(t, nil).s.drainWindow(context.Background()); w != DefaultDrainWindow {
		t.Errorf("default window %v, want %v", w, DefaultDrainWindow)
	}
}
