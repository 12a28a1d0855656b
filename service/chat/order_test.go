package chat

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-gw/shoal/service/chat/chattest"
)

// showInOrder applies the protocol's rule for live messages of one room
// to what arrived, in arrival order: a message whose prev is the last one
// shown is shown (and any waiting ones it unblocks), one at or below the
// last is a duplicate, one beyond waits. It returns the seqs shown and how
// many still wait, and fails on a duplicate.
func showInOrder(t testing.TB, who string, last uint64, arrived []frame) ([]uint64, int) {
	t.Helper()
	waiting := map[uint64]frame{} // by prev
	seen := map[uint64]bool{}
	var shown []uint64
	for _, m := range arrived {
		if seen[m.Seq] {
			t.Fatalf("%s: message %d arrived twice", who, m.Seq)
		}
		seen[m.Seq] = true
		if m.Seq <= last {
			continue
		}
		waiting[m.Prev] = m
		for {
			next, ok := waiting[last]
			if !ok {
				break
			}
			delete(waiting, last)
			shown = append(shown, next.Seq)
			last = next.Seq
		}
	}
	return shown, len(waiting)
}

// sayConcurrently joins every client to room, makes each say n messages
// at once with the others (each waiting for its own sent, as a client
// that wants its own order does), and checks that every member received
// every message exactly once, that they form one chain without a gap,
// and that the rule for showing messages shows them in the same order
// everywhere, the order of history.
func sayConcurrently(t *testing.T, r *rig, clients []*client, room string, n int) {
	for _, c := range clients {
		c.join(room)
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for i := range n {
				f, err := c.callErr(map[string]any{"type": "say", "room": room, "text": fmt.Sprintf("%s-%d", c.User, i)})
				if err != nil || f.Type != TypeSent {
					t.Errorf("%s say %d: %v %s", c.User, i, err, f.Raw)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total := len(clients) * n
	var chain []uint64
	for _, c := range clients {
		var arrived []frame
		for len(arrived) < total {
			arrived = append(arrived, c.await("message", func(f frame) bool { return f.Type == TypeMessage && f.Room == room }))
		}
		shown, waiting := showInOrder(t, c.User, 0, arrived)
		if waiting != 0 || len(shown) != total {
			t.Fatalf("%s: %d shown, %d still waiting, of %d", c.User, len(shown), waiting, total)
		}
		if chain == nil {
			chain = shown
		} else if !slices.Equal(shown, chain) {
			t.Fatalf("%s shows another order than %s", c.User, clients[0].User)
		}
		c.none("a duplicate message", func(f frame) bool { return f.Type == TypeMessage && f.Room == room })
	}
	if !slices.IsSorted(chain) {
		t.Fatalf("the chain is not in seq order: %v", chain)
	}
	h := clients[0].mustCall(TypeHistory, map[string]any{"type": "history", "room": room, "after": 0})
	if got := seqsOf(h.Messages); !slices.Equal(got, chain) {
		t.Fatalf("history %v differs from the chain the members saw", got)
	}
	counts := map[string]int{}
	for _, m := range h.Messages {
		counts[m.User]++
	}
	for _, c := range clients {
		if counts[c.User] != n {
			t.Fatalf("history has %d messages of %s, want %d", counts[c.User], c.User, n)
		}
	}
}

// TestConcurrentSays has many connections over two shards say at once in
// one room, served by three instances, whose appends race for the room's
// chain.
func TestConcurrentSays(t *testing.T) {
	r := newRig(t, 3, 2, withConfig(func(c *Config) { c.History = 1000 }))
	var clients []*client
	for i := range 16 {
		clients = append(clients, r.register(r.shards[i%2], fmt.Sprintf("u%02d", i)))
	}
	sayConcurrently(t, r, clients, "lobby", 10)
}

// TestMultiShard runs two shards on one port (SO_REUSEPORT), as shoal
// serve's workers do: the kernel spreads the clients, and every message
// reaches every member exactly once and in the same order.
func TestMultiShard(t *testing.T) {
	r := newRig(t, 2, 1)
	second := r.startShard(r.shards[0].addr)
	if second.addr != r.shards[0].addr {
		t.Fatalf("second shard on %s, want the first's %s", second.addr, r.shards[0].addr)
	}
	var clients []*client
	for i := 0; i < 20 || r.shards[0].s.Conns() == 0 || second.s.Conns() == 0; i++ {
		if i == 200 {
			t.Fatalf("200 connections, all on one shard: %d and %d", r.shards[0].s.Conns(), second.s.Conns())
		}
		clients = append(clients, r.register(r.shards[0], fmt.Sprintf("m%03d", i)))
	}
	t.Logf("clients per shard: %d and %d", r.shards[0].s.Conns(), second.s.Conns())
	sayConcurrently(t, r, clients, "hall", 3)
}

// TestInstancesAgree runs one scenario with one instance and with three:
// every answer and event must be the same.
func TestInstancesAgree(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d instances", n), func(t *testing.T) {
			r := newRig(t, n, 2)
			s1, s2 := r.shards[0], r.shards[1]
			var users []*client
			for i := range 6 {
				sh := s1
				if i >= 3 {
					sh = s2
				}
				users = append(users, r.register(sh, fmt.Sprintf("u%d", i)))
			}
			tab := r.tab(s2, users[0])
			for _, u := range append(users, tab) {
				u.join("lobby")
			}
			for _, u := range users[:3] {
				u.join("side")
			}
			who := users[5].mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
			if got := strings.Join(who.Members, ","); got != "u0,u1,u2,u3,u4,u5" {
				t.Fatalf("who lobby: %s", got)
			}
			rooms := users[4].mustCall(TypeRooms, map[string]any{"type": "rooms"})
			if len(rooms.Rooms) != 2 || rooms.Rooms[0] != (chattest.Room{Room: "lobby", Members: 6}) || rooms.Rooms[1] != (chattest.Room{Room: "side", Members: 3}) {
				t.Fatalf("rooms: %s", rooms.Raw)
			}
			s := users[3].say("lobby", "hello")
			for _, u := range append(users, tab) {
				if m := u.message("lobby", "hello"); m.Seq != s.Seq || m.User != "u3" {
					t.Fatalf("%s got %s", u.User, m.Raw)
				}
			}
			// u0 leaves with one tab: still there; drops the other: gone.
			users[0].mustCall(TypeLeft, map[string]any{"type": "leave", "room": "lobby"})
			who = users[5].mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
			if got := strings.Join(who.Members, ","); got != "u0,u1,u2,u3,u4,u5" {
				t.Fatalf("who lobby with one tab of u0 left: %s", got)
			}
			tab.close()
			for _, u := range users[1:] {
				u.presence("lobby", "u0", EventLeave)
			}
			users[1].mustCall(TypeLeft, map[string]any{"type": "leave", "room": "side"})
			users[2].presence("side", "u1", EventLeave)
			who = users[2].mustCall(TypeMembers, map[string]any{"type": "who", "room": "side"})
			if got := strings.Join(who.Members, ","); got != "u0,u2" {
				t.Fatalf("who side: %s", got)
			}
			who = users[2].mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
			if got := strings.Join(who.Members, ","); got != "u1,u2,u3,u4,u5" {
				t.Fatalf("who lobby after u0 left: %s", got)
			}
			h := users[4].mustCall(TypeHistory, map[string]any{"type": "history", "room": "lobby"})
			if len(h.Messages) != 1 || h.Messages[0].Text != "hello" {
				t.Fatalf("history: %s", h.Raw)
			}
			for _, u := range users[1:] {
				u.none("a second leave of u0", func(f frame) bool {
					return f.Type == TypePresence && f.User == "u0" && f.Event == EventLeave
				})
			}
		})
	}
}
