package chat

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// shardTable is what this instance has heard of the shards.
type shardTable struct {
	mu      sync.Mutex
	alive   map[string]bool
	started time.Time // set by Start and after reconnects; sweep's own
}

// Timings of the background work.
const (
	// cleanupWorkers is how many connections of a dead shard are dropped
	// at once.
	cleanupWorkers = 8
	// epochEvery is how often the history stream's epoch is read again,
	// to notice a stream recreated outside this instance.
	epochEvery = 10 * time.Second
)

// ShardUp records that a shard is alive.
func (h *Handler) ShardUp(shard string) {
	h.shards.mu.Lock()
	defer h.shards.mu.Unlock()
	if h.shards.alive == nil {
		h.shards.alive = make(map[string]bool)
	}
	h.shards.alive[shard] = true
}

// ShardDown drops the presence of a shard's connections: a shard that
// died sends no close events. The connections are the ones the mirror
// names now, so a new life of the same shard id that follows at once
// keeps its own. The work runs in the background: life records wait while
// ShardDown runs.
func (h *Handler) ShardDown(shard string) {
	h.shards.mu.Lock()
	delete(h.shards.alive, shard)
	h.shards.mu.Unlock()
	conns := h.mirror.shardConns(shard)
	h.log.Info("chat: shard down", "shard", shard, "conns", len(conns))
	h.bg.Go(func() { h.cleanShard(shard, conns) })
}

func (h *Handler) isAlive(shard string) bool {
	h.shards.mu.Lock()
	defer h.shards.mu.Unlock()
	return h.shards.alive[shard]
}

// sweep runs until Stop: it drops the presence of shards named in the
// bucket that this instance has not heard of since it started, once a
// shard would have been heard (ShardTimeout), and it reads the history
// epoch again now and then.
func (h *Handler) sweep() {
	period := max(h.cfg.ShardTimeout/2, 50*time.Millisecond)
	tick := time.NewTicker(period)
	defer tick.Stop()
	lastEpoch := time.Now()
	nc := h.svc.NATS()
	reconnects := nc.Stats().Reconnects
	for {
		select {
		case <-h.life.Done():
			return
		case now := <-tick.C:
			// Shards are heard only while the bus is: after a reconnect
			// they get ShardTimeout anew, as after a start.
			if n := nc.Stats().Reconnects; !nc.IsConnected() || n != reconnects {
				if nc.IsConnected() {
					reconnects = n
				}
				h.shards.started = now
				continue
			}
			if now.Sub(h.shards.started) >= h.cfg.ShardTimeout {
				for _, shard := range h.mirror.shardsNamed() {
					if !h.isAlive(shard) {
						h.log.Info("chat: presence of a shard not heard of", "shard", shard)
						h.cleanShard(shard, h.mirror.shardConns(shard))
					}
				}
			}
			if now.Sub(lastEpoch) >= epochEvery {
				ctx, cancel := context.WithTimeout(h.life, h.cfg.RequestTimeout)
				h.refreshEpoch(ctx)
				cancel()
				lastEpoch = now
			}
		}
	}
}

// cleanShard drops the given connections of a gone shard: each leaves
// the rooms its record lists and the member lists that name it. Every
// instance may be doing the same at once; each step is a
// compare-and-set, so the work is repeated but never undone, and exactly
// one instance announces each user's leave. The order is shuffled so the
// instances mostly take different connections first.
func (h *Handler) cleanShard(shard string, conns map[string][]string) {
	if len(conns) == 0 {
		return
	}
	ids := make([]string, 0, len(conns))
	for id := range conns {
		ids = append(ids, id)
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(cleanupWorkers, len(ids)) {
		wg.Go(func() {
			for id := range work {
				h.dropGone(id, conns[id])
			}
		})
	}
feed:
	for _, id := range ids {
		select {
		case work <- id:
		case <-h.life.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	h.log.Info("chat: dropped the presence of a gone shard", "shard", shard, "conns", len(ids))
}

// dropGone drops one connection of a gone shard: its record's rooms, and
// the member lists that name it (which a record may miss if an instance
// died between writes).
func (h *Handler) dropGone(id string, memberKeys []string) {
	ctx, cancel := context.WithTimeout(h.life, h.cfg.RequestTimeout)
	defer cancel()
	if err := h.dropConn(ctx, id); err != nil {
		h.log.Warn("chat: drop connection of a gone shard", "conn", id, "err", err)
	}
	for _, rest := range memberKeys {
		room, user, _ := splitMember(rest)
		if err := h.leaveMember(ctx, room, user, id); err != nil {
			h.log.Warn("chat: drop member of a gone shard", "conn", id, "room", room, "err", err)
		}
	}
}
