package service

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

const (
	// defaultBeat is the heartbeat interval assumed for a record without one.
	defaultBeat = time.Second
	// minCheck bounds how often the watcher looks for silent shards.
	minCheck = 10 * time.Millisecond
	// lifeBacklog is the life subscription's channel. A channel subscription
	// drops records when it is full rather than stalling the connection's
	// reader; records are few (one per shard per interval) and a shard must
	// miss bus.MissedBeats of them before it counts as gone, so a rare drop
	// costs nothing.
	lifeBacklog = 1024
)

// watcher follows the shards' life records for a ShardWatcher. One goroutine
// owns the table of known shards and makes every ShardUp and ShardDown call,
// so the two never run concurrently.
type watcher struct {
	nc   *nats.Conn
	sub  *nats.Subscription
	msgs chan *nats.Msg
	sw   ShardWatcher
	log  *slog.Logger
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type shardLife struct {
	seen     time.Time // local receive time: shard clocks may disagree with ours
	interval time.Duration
	pid      int
}

func startWatcher(nc *nats.Conn, subject string, sw ShardWatcher, log *slog.Logger) (*watcher, error) {
	w := &watcher{
		nc:   nc,
		msgs: make(chan *nats.Msg, lifeBacklog),
		sw:   sw,
		log:  log,
		done: make(chan struct{}),
	}
	sub, err := nc.ChanSubscribe(subject, w.msgs)
	if err != nil {
		return nil, fmt.Errorf("service: subscribe %s: %w", subject, err)
	}
	w.sub = sub
	w.wg.Go(w.loop)
	return w, nil
}

// stop ends the watch and waits for the goroutine; safe to call twice.
func (w *watcher) stop() {
	w.once.Do(func() {
		_ = w.sub.Unsubscribe()
		close(w.done)
	})
	w.wg.Wait()
}

func (w *watcher) loop() {
	known := make(map[string]shardLife)
	check := time.NewTimer(checkPeriod(known))
	defer check.Stop()
	reconnects := w.nc.Stats().Reconnects
	for {
		select {
		case <-w.done:
			return
		case m := <-w.msgs:
			w.record(known, m)
		case now := <-check.C:
			// Silence means a shard is gone only while this service hears
			// the bus: while its own connection is down, or just after it
			// came back, every shard is silent. Each gets its intervals
			// anew from the reconnect.
			if n := w.nc.Stats().Reconnects; !w.nc.IsConnected() || n != reconnects {
				if w.nc.IsConnected() {
					reconnects = n
				}
				for shard, l := range known {
					l.seen = now
					known[shard] = l
				}
				check.Reset(checkPeriod(known))
				continue
			}
			for shard, l := range known {
				if now.Sub(l.seen) > bus.MissedBeats*l.interval {
					delete(known, shard)
					w.log.Info("service: shard silent", "shard", shard, "interval", l.interval)
					w.sw.ShardDown(shard)
				}
			}
			check.Reset(checkPeriod(known))
		}
	}
}

// record applies one life record to known.
func (w *watcher) record(known map[string]shardLife, m *nats.Msg) {
	var rec bus.Life
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		w.log.Debug("service: bad life record", "subject", m.Subject, "err", err)
		return
	}
	// The subject names the shard even if the record does not.
	shard := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	if rec.Shard != "" && rec.Shard != shard {
		w.log.Debug("service: life record for another shard", "subject", m.Subject, "shard", rec.Shard)
		return
	}
	if bus.ValidShardID(shard) != nil {
		return
	}
	switch rec.State {
	case bus.LifeUp, bus.LifeHeartbeat:
		interval := time.Duration(rec.IntervalMS) * time.Millisecond
		if interval <= 0 {
			interval = defaultBeat
		}
		prev, ok := known[shard]
		known[shard] = shardLife{seen: time.Now(), interval: interval, pid: rec.PID}
		if ok && (rec.State == bus.LifeUp || rec.PID != prev.pid) {
			// The id came back in a new process before its silence was
			// noticed: the old life's connections are gone all the same.
			w.log.Info("service: shard restarted", "shard", shard, "pid", rec.PID, "was", prev.pid)
			w.sw.ShardDown(shard)
			ok = false
		}
		if !ok {
			w.sw.ShardUp(shard)
		}
	case bus.LifeDown:
		// Reported even for a shard not seen up: this instance may have
		// started after it and still hold state from an earlier instance.
		delete(known, shard)
		w.sw.ShardDown(shard)
	default:
		w.log.Debug("service: life record with unknown state", "shard", shard, "state", rec.State)
	}
}

// checkPeriod is half the shortest heartbeat interval known, so a silent
// shard is noticed within half an interval of its deadline.
func checkPeriod(known map[string]shardLife) time.Duration {
	p := defaultBeat
	for _, l := range known {
		p = min(p, l.interval)
	}
	return max(p/2, minCheck)
}
