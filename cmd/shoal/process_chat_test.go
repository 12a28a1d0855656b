package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/service/chat/chattest"
)

// chatClient is a chattest.Client that fails its test on errors.
type chatClient struct {
	*chattest.Client
	t *testing.T
}

const chatWait = 20 * time.Second

func dialChat(t *testing.T, base, token string) (*chatClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := chattest.Dial(ctx, base, token)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &chatClient{Client: c, t: t}, nil
}

func (cc *chatClient) await(what string, match func(chattest.Frame) bool) chattest.Frame {
	cc.t.Helper()
	f, err := cc.Await(what, chatWait, match)
	if err != nil {
		cc.t.Fatal(err)
	}
	return f
}

func (cc *chatClient) call(want string, msg map[string]any) chattest.Frame {
	cc.t.Helper()
	f, err := cc.Call(chatWait, msg)
	if err != nil {
		cc.t.Fatal(err)
	}
	if f.Type != want {
		cc.t.Fatalf("%s: %v answered %s, want %s", cc.User, msg, f.Raw, want)
	}
	return f
}

// TestServeChat runs `shoal serve` with two workers and two chat
// processes: users spread over both workers chat in one room, every
// message reaches every member once and in one order, a user reconnects
// with the token of its welcome (checked by the worker at the handshake)
// and resumes without a gap, and when a worker is killed its users leave
// the room.
func TestServeChat(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "2", "--services", "chat=2")
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(f.ws, "ws://"))
	port, _ := strconv.Atoi(portStr)
	workers := f.workers()
	waitUntil(t, "two workers", func() bool { workers = f.workers(); return len(workers) == 2 })

	// Register users until both workers hold two or more.
	var users []*chatClient
	var owner map[int]int
	for len(users) < 10 || !spread(distinct(owner)) {
		if len(users) == 60 {
			t.Fatalf("60 users on one worker: %v", owner)
		}
		c, err := dialChat(t, f.ws, "")
		if err != nil {
			t.Fatal(err)
		}
		c.User = fmt.Sprintf("user%02d", len(users))
		w := c.call("welcome", map[string]any{"type": "register", "user": c.User, "password": "password-" + c.User})
		c.Token = w.Token
		users = append(users, c)
		ports := make([]int, len(users))
		for i, u := range users {
			ports[i] = u.LocalPort()
		}
		owner = owners(t, workers, port, ports)
	}
	t.Logf("users per worker: %v", distinct(owner))
	for _, u := range users {
		u.call("joined", map[string]any{"type": "join", "room": "hall"})
	}

	// Everyone says two messages at once with the others.
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			for i := range 2 {
				if r, err := u.Call(chatWait, map[string]any{"type": "say", "room": "hall", "text": fmt.Sprintf("%s %d", u.User, i)}); err != nil || r.Type != "sent" {
					t.Errorf("%s say: %v %s", u.User, err, r.Raw)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total := 2 * len(users)
	var chain []uint64
	var epoch string
	for _, u := range users {
		seen := map[uint64]bool{}
		var seqs []uint64
		byPrev := map[uint64]uint64{}
		for range total {
			m := u.await("message", func(f chattest.Frame) bool { return f.Type == "message" })
			if seen[m.Seq] {
				t.Fatalf("%s got message %d twice", u.User, m.Seq)
			}
			seen[m.Seq] = true
			seqs = append(seqs, m.Seq)
			byPrev[m.Prev] = m.Seq
			epoch = m.Epoch
		}
		slices.Sort(seqs)
		// One chain: from prev 0, each message's prev is the one before.
		var got []uint64
		for last := uint64(0); len(got) < total; {
			next, ok := byPrev[last]
			if !ok {
				t.Fatalf("%s: the chain breaks after %d", u.User, last)
			}
			got, last = append(got, next), next
		}
		if !slices.Equal(got, seqs) {
			t.Fatalf("%s: chain %v is not the seq order %v", u.User, got, seqs)
		}
		if chain == nil {
			chain = got
		} else if !slices.Equal(chain, got) {
			t.Fatalf("%s saw another chain than %s", u.User, users[0].User)
		}
	}

	// user00 goes away, misses a message, and comes back with its token.
	away := users[0]
	away.Close()
	sent := users[1].call("sent", map[string]any{"type": "say", "room": "hall", "text": "while you were away"})
	back, err := dialChat(t, f.ws, away.Token)
	if err != nil {
		t.Fatalf("reconnect with the welcome's token: %v", err)
	}
	back.User = away.User
	if w := back.await("welcome", func(f chattest.Frame) bool { return f.Type == "welcome" }); w.User != away.User || w.Token == "" {
		t.Fatalf("welcome at open: %s", w.Raw)
	}
	j := back.call("joined", map[string]any{"type": "join", "room": "hall", "after": chain[len(chain)-1], "epoch": epoch})
	if len(j.History) != 1 || j.History[0].Seq != sent.Seq || j.History[0].Prev != chain[len(chain)-1] {
		t.Fatalf("resumed history: %s", j.Raw)
	}
	var se ws.StatusError
	if _, err := dialChat(t, f.ws, away.Token+"x"); !errors.As(err, &se) || int(se) != 401 {
		t.Fatalf("dial with a bad token: %v, want 401", err)
	}

	// kill -9 a worker: its users (those with no tab on the other) leave.
	var victim int
	for _, pid := range owner {
		victim = pid
		break
	}
	var gone, stay []*chatClient
	for i, u := range users[1:] {
		if owner[i+1] == victim {
			gone = append(gone, u)
		} else {
			stay = append(stay, u)
		}
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, g := range gone {
		stay[0].await("leave of "+g.User, func(f chattest.Frame) bool {
			return f.Type == "presence" && f.User == g.User && f.Event == "leave"
		})
	}
	who := stay[0].call("members", map[string]any{"type": "who", "room": "hall"})
	for _, g := range gone {
		if slices.Contains(who.Members, g.User) {
			t.Fatalf("who after the worker died still lists %s: %v", g.User, who.Members)
		}
	}
	for _, s := range stay {
		if !slices.Contains(who.Members, s.User) {
			t.Fatalf("who lost %s of the surviving worker: %v", s.User, who.Members)
		}
	}
}

// spread reports whether two workers hold two clients or more each.
func spread(perWorker map[int]int) bool {
	n := 0
	for _, c := range perWorker {
		if c >= 2 {
			n++
		}
	}
	return n >= 2
}

// distinct counts the clients per worker.
func distinct(owner map[int]int) map[int]int {
	out := make(map[int]int)
	for _, pid := range owner {
		out[pid]++
	}
	return out
}
