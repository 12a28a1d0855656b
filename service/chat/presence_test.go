package chat

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-gw/shoal/service"
)

const testBeat = 100 * time.Millisecond

// TestShardDeath crashes a shard (no close events, no "down") and checks
// that its users leave the rooms once its heartbeats stop, and only its.
func TestShardDeath(t *testing.T) {
	r := newRig(t, 2, 2, withBeat(testBeat))
	s1, s2 := r.shards[0], r.shards[1]
	a, b := r.register(s1, "alice"), r.register(s2, "bob")
	// Carol has a tab on each shard: she stays.
	c1 := r.register(s1, "carol")
	c2 := r.tab(s2, c1)
	for _, c := range []*client{a, b, c1, c2} {
		c.join("lobby")
	}
	b.join("attic")
	a.join("attic")
	b.presence("attic", "alice", EventJoin)

	// The crashed shard sends no close events: the leaves come from the
	// instances noticing three heartbeats missing.
	s1.crash()
	for _, room := range []string{"lobby", "attic"} {
		b.presence(room, "alice", EventLeave)
	}
	who := b.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "bob,carol" {
		t.Fatalf("who after the crash: %s", who.Raw)
	}
	b.none("carol leaving", func(f frame) bool { return f.Type == TypePresence && f.User == "carol" && f.Event == EventLeave })
	waitFor(t, "no presence left of the dead shard", func() bool {
		for _, in := range r.instances {
			if len(in.h.mirror.shardConns("s1")) > 0 {
				return false
			}
		}
		return true
	})
}

// TestOrphanedPresence leaves presence behind a shard that dies while no
// chat instance runs: the next instance never hears of that shard and
// drops its connections.
func TestOrphanedPresence(t *testing.T) {
	r := newRig(t, 1, 2, withBeat(testBeat), withConfig(func(c *Config) {
		c.ShardTimeout = 5 * testBeat
	}))
	s1, s2 := r.shards[0], r.shards[1]
	a, b := r.register(s1, "alice"), r.register(s2, "bob")
	a.join("lobby")
	b.join("lobby")
	r.instances[0].stop()
	s1.crash()
	// Long enough for no record of s1 to be left in flight.
	time.Sleep(3 * testBeat)
	in := r.startInstance()
	if len(in.h.mirror.shardConns("s1")) == 0 {
		t.Fatal("the new instance did not load the presence of s1")
	}
	b.presence("lobby", "alice", EventLeave)
	who := b.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "bob" {
		t.Fatalf("who: %s", who.Raw)
	}
	// The live shard's presence stays.
	if n := len(in.h.mirror.shardConns("s2")); n != 1 {
		t.Fatalf("%d connections of the live shard, want 1", n)
	}
}

// TestJoinRacesClose sends joins and drops the connections at once, over
// three instances: NATS gives a connection's join and close to any of
// them, so joins race closes. No presence may be left behind.
func TestJoinRacesClose(t *testing.T) {
	r := newRig(t, 3, 2)
	obs := r.register(r.shards[0], "observer")
	rooms := []string{"r1", "r2", "r3"}
	for _, room := range rooms {
		obs.join(room)
	}
	var clients []*client
	for i := range 12 {
		clients = append(clients, r.register(r.shards[i%2], "u"+string(rune('a'+i))))
	}
	for round := range 3 {
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() {
				tab, err := dialChat(r.shards[round%2].addr, c.Token)
				if err != nil {
					t.Error(err)
					return
				}
				defer tab.close()
				if _, err := tab.awaitErr("welcome", func(f frame) bool { return f.Type == TypeWelcome }); err != nil {
					t.Error(err)
					return
				}
				for _, room := range rooms {
					if err := tab.Send(`{"type":"join","room":"` + room + `"}`); err != nil {
						t.Error(err)
						return
					}
				}
				if round == 2 {
					// Waiting for one answer, so the close races the later joins.
					if _, err := tab.awaitErr("joined", func(f frame) bool { return f.Type == TypeJoined }); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
	}
	for _, room := range rooms {
		waitFor(t, "only the observer in "+room, func() bool {
			w := obs.mustCall(TypeMembers, map[string]any{"type": "who", "room": room})
			return len(w.Members) == 1 && w.Members[0] == "observer"
		})
	}
	for _, in := range r.instances {
		waitFor(t, "no connection records but the observer's", func() bool {
			in.h.mirror.mu.RLock()
			defer in.h.mirror.mu.RUnlock()
			return len(in.h.mirror.conns) == 1
		})
	}
}

// TestPresenceOrder makes one user join and leave over and over with two
// tabs on three instances, while an observer applies presence events by
// the protocol's rule (the highest revision wins): it must end with what
// who says.
func TestPresenceOrder(t *testing.T) {
	r := newRig(t, 3, 1)
	sh := r.shards[0]
	obs := r.register(sh, "observer")
	j := obs.join("lobby")
	a := r.register(sh, "alice")
	tabs := []*client{a, r.tab(sh, a)}
	for range 10 {
		var wg sync.WaitGroup
		for _, tab := range tabs {
			wg.Go(func() {
				tab.join("lobby")
				tab.mustCall(TypeLeft, map[string]any{"type": "leave", "room": "lobby"})
			})
		}
		wg.Wait()
	}
	tabs[0].join("lobby")
	who := obs.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "alice,observer" {
		t.Fatalf("who: %s", who.Raw)
	}
	// The write that made alice present last.
	e, err := r.instances[0].h.presence.Get(context.Background(), memberKey("lobby", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	// Apply the events in arrival order by the rule: a higher revision
	// wins. Once the last one came, the state must be present.
	present, rev := false, j.Rev
	for rev < e.Revision {
		f := obs.await("presence", func(f frame) bool { return f.Type == TypePresence && f.User == "alice" })
		if f.Rev > rev {
			present, rev = f.Event == EventJoin, f.Rev
		}
	}
	if !present || rev != e.Revision {
		t.Fatalf("by the events alice is present=%v at rev %d; the bucket has her at rev %d", present, rev, e.Revision)
	}
	obs.none("presence after the last", func(f frame) bool {
		return f.Type == TypePresence && f.User == "alice" && f.Rev > e.Revision
	})
}

// TestCloseCleansHalfDone leaves a member list naming a connection whose
// record does not list the room (a request that failed half way): the
// connection's close cleans it too.
func TestCloseCleansHalfDone(t *testing.T) {
	r := newRig(t, 1, 1)
	a, b := r.register(r.shards[0], "alice"), r.register(r.shards[0], "bob")
	a.join("lobby")
	b.join("attic")
	ids := r.conns("lobby", "alice")
	if len(ids) != 1 {
		t.Fatalf("alice's connections in lobby: %v", ids)
	}
	ctx := context.Background()
	h := r.instances[0].h
	if _, err := h.presence.Create(ctx, memberKey("attic", "alice"), []byte(`{"conns":["`+ids[0]+`"]}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the half-done member list in the mirror", func() bool { return len(r.conns("attic", "alice")) == 1 })
	a.close()
	b.presence("attic", "alice", EventLeave)
	if _, err := h.presence.Get(ctx, memberKey("attic", "alice")); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("member.attic.alice after the close: %v", err)
	}
}
