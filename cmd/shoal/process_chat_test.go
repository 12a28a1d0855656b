package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// chatFrame is a server message of the chat protocol.
type chatFrame struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id"`
	Code    string          `json:"code"`
	Room    string          `json:"room"`
	User    string          `json:"user"`
	Token   string          `json:"token"`
	Text    string          `json:"text"`
	Event   string          `json:"event"`
	Epoch   string          `json:"epoch"`
	Seq     uint64          `json:"seq"`
	Prev    uint64          `json:"prev"`
	Members []string        `json:"members"`
	History []chatFrame     `json:"history"`
	raw     string
}

// chatClient speaks the chat protocol over a real WebSocket. One reader
// goroutine decodes frames; the test takes them with await.
type chatClient struct {
	t     *testing.T
	c     net.Conn
	user  string
	token string
	mu    sync.Mutex
	in    chan chatFrame
	queue []chatFrame
	ids   int
}

func dialChat(t *testing.T, base, token string) (*chatClient, error) {
	u := base + "/ws/chat"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, br, _, err := ws.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	cc := &chatClient{t: t, c: c, in: make(chan chatFrame, 1024)}
	rw := struct {
		io.Reader
		io.Writer
	}{r, writerTo(func(p []byte) (int, error) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return c.Write(p)
	})}
	go func() {
		defer close(cc.in)
		for {
			data, _, err := wsutil.ReadServerData(rw)
			if err != nil {
				return
			}
			var f chatFrame
			_ = json.Unmarshal(data, &f)
			f.raw = string(data)
			cc.in <- f
		}
	}()
	return cc, nil
}

type writerTo func([]byte) (int, error)

func (w writerTo) Write(p []byte) (int, error) { return w(p) }

// awaitErr returns the first frame that matches, queueing the others.
func (cc *chatClient) awaitErr(what string, match func(chatFrame) bool) (chatFrame, error) {
	for i, f := range cc.queue {
		if match(f) {
			cc.queue = slices.Delete(cc.queue, i, i+1)
			return f, nil
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case f, ok := <-cc.in:
			if !ok {
				return chatFrame{}, fmt.Errorf("%s: closed while waiting for %s", cc.user, what)
			}
			if match(f) {
				return f, nil
			}
			cc.queue = append(cc.queue, f)
		case <-timeout:
			return chatFrame{}, fmt.Errorf("%s: no %s", cc.user, what)
		}
	}
}

func (cc *chatClient) await(what string, match func(chatFrame) bool) chatFrame {
	cc.t.Helper()
	f, err := cc.awaitErr(what, match)
	if err != nil {
		cc.t.Fatal(err)
	}
	return f
}

// callErr sends a request with a fresh id and waits for its answer.
func (cc *chatClient) callErr(msg map[string]any) (chatFrame, error) {
	cc.ids++
	id := strconv.Itoa(cc.ids)
	msg["id"] = cc.ids
	b, _ := json.Marshal(msg)
	cc.mu.Lock()
	err := wsutil.WriteClientText(cc.c, b)
	cc.mu.Unlock()
	if err != nil {
		return chatFrame{}, err
	}
	return cc.awaitErr("answer "+id, func(f chatFrame) bool { return string(f.ID) == id })
}

func (cc *chatClient) call(want string, msg map[string]any) chatFrame {
	cc.t.Helper()
	f, err := cc.callErr(msg)
	if err != nil {
		cc.t.Fatal(err)
	}
	if f.Type != want {
		cc.t.Fatalf("%s: %v answered %s, want %s", cc.user, msg, f.raw, want)
	}
	return f
}

func (cc *chatClient) port() int { return cc.c.LocalAddr().(*net.TCPAddr).Port }

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
		c.user = fmt.Sprintf("user%02d", len(users))
		w := c.call("welcome", map[string]any{"type": "register", "user": c.user, "password": "password-" + c.user})
		c.token = w.Token
		users = append(users, c)
		ports := make([]int, len(users))
		for i, u := range users {
			ports[i] = u.port()
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
				if r, err := u.callErr(map[string]any{"type": "say", "room": "hall", "text": fmt.Sprintf("%s %d", u.user, i)}); err != nil || r.Type != "sent" {
					t.Errorf("%s say: %v %s", u.user, err, r.raw)
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
			m := u.await("message", func(f chatFrame) bool { return f.Type == "message" })
			if seen[m.Seq] {
				t.Fatalf("%s got message %d twice", u.user, m.Seq)
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
				t.Fatalf("%s: the chain breaks after %d", u.user, last)
			}
			got, last = append(got, next), next
		}
		if !slices.Equal(got, seqs) {
			t.Fatalf("%s: chain %v is not the seq order %v", u.user, got, seqs)
		}
		if chain == nil {
			chain = got
		} else if !slices.Equal(chain, got) {
			t.Fatalf("%s saw another chain than %s", u.user, users[0].user)
		}
	}

	// user00 goes away, misses a message, and comes back with its token.
	away := users[0]
	away.c.Close()
	sent := users[1].call("sent", map[string]any{"type": "say", "room": "hall", "text": "while you were away"})
	back, err := dialChat(t, f.ws, away.token)
	if err != nil {
		t.Fatalf("reconnect with the welcome's token: %v", err)
	}
	back.user = away.user
	if w := back.await("welcome", func(f chatFrame) bool { return f.Type == "welcome" }); w.User != away.user || w.Token == "" {
		t.Fatalf("welcome at open: %s", w.raw)
	}
	j := back.call("joined", map[string]any{"type": "join", "room": "hall", "after": chain[len(chain)-1], "epoch": epoch})
	if len(j.History) != 1 || j.History[0].Seq != sent.Seq || j.History[0].Prev != chain[len(chain)-1] {
		t.Fatalf("resumed history: %s", j.raw)
	}
	var se ws.StatusError
	if _, err := dialChat(t, f.ws, away.token+"x"); !errors.As(err, &se) || int(se) != 401 {
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
		stay[0].await("leave of "+g.user, func(f chatFrame) bool {
			return f.Type == "presence" && f.User == g.user && f.Event == "leave"
		})
	}
	who := stay[0].call("members", map[string]any{"type": "who", "room": "hall"})
	for _, g := range gone {
		if slices.Contains(who.Members, g.user) {
			t.Fatalf("who after the worker died still lists %s: %v", g.user, who.Members)
		}
	}
	for _, s := range stay {
		if !slices.Contains(who.Members, s.user) {
			t.Fatalf("who lost %s of the surviving worker: %v", s.user, who.Members)
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
