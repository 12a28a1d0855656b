package main

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-gw/shoal/service/chat/chattest"
)

// The chat's stream and buckets, under the default prefix.
var chatStreams = []string{"shoal_chat_history", "KV_shoal_chat_accounts", "KV_shoal_chat_rooms", "KV_shoal_chat_presence"}

// chatter is one person of the chat tests: a connection, and the room's
// chain of messages as the protocol's rule (PROTOCOL.md, "Ordering")
// rebuilds it from what arrives live and from history.
type chatter struct {
	t    *testing.T
	c    *chattest.Client
	room string
	// last is the seq of the newest message shown, epoch its history's.
	last  uint64
	epoch string
	// shown are the messages of the chain in order; waiting ones came
	// before the message they follow.
	shown   []chattest.Frame
	waiting map[uint64]chattest.Frame // by prev
	seen    map[uint64]bool
	dups    int
}

// register connects to base, registers user, and joins room.
func register(t *testing.T, base, user, room string) *chatter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chatWait)
	defer cancel()
	c, err := chattest.Dial(ctx, base, "")
	if err != nil {
		t.Fatalf("%s: dial %s: %v", user, base, err)
	}
	t.Cleanup(func() { c.Close() })
	c.User = user
	f, err := c.Call(chatWait, map[string]any{"type": "register", "user": user, "password": "secret " + user})
	if err != nil || f.Type != "welcome" {
		t.Fatalf("%s: register: %v %s", user, err, f.Raw)
	}
	c.Token = f.Token
	ch := &chatter{t: t, c: c, room: room, waiting: map[uint64]chattest.Frame{}, seen: map[uint64]bool{}}
	ch.join()
	return ch
}

// join joins the room, resuming after the last message shown when there
// is one, and returns the members.
func (ch *chatter) join() []string {
	ch.t.Helper()
	req := map[string]any{"type": "join", "room": ch.room}
	if ch.epoch != "" {
		req["after"], req["epoch"] = ch.last, ch.epoch
	}
	f, err := ch.c.Call(chatWait, req)
	if err != nil || f.Type != "joined" {
		ch.t.Fatalf("%s: join %s: %v %s", ch.c.User, ch.room, err, f.Raw)
	}
	if f.Epoch != ch.epoch {
		// A first join (or a new epoch): the chain starts from the history given.
		ch.epoch, ch.last, ch.shown = f.Epoch, 0, nil
		if len(f.History) > 0 {
			ch.last = f.History[0].Prev
		}
	}
	for _, m := range f.History {
		ch.arrive(m)
	}
	ch.drain()
	return f.Members
}

// arrive applies the ordering rule to one message.
func (ch *chatter) arrive(m chattest.Frame) {
	switch {
	case m.Seq <= ch.last || ch.seen[m.Seq]:
		ch.dups++
		return
	case m.Prev != ch.last:
		ch.waiting[m.Prev] = m
		return
	}
	for ok := true; ok; m, ok = ch.waiting[ch.last] {
		delete(ch.waiting, m.Prev)
		ch.seen[m.Seq] = true
		ch.shown = append(ch.shown, m)
		ch.last = m.Seq
	}
}

// drain applies the messages that arrived live so far.
func (ch *chatter) drain() {
	for {
		f, err := ch.c.Await("message", 0, func(f chattest.Frame) bool { return f.Type == "message" && f.Room == ch.room })
		if err != nil {
			return
		}
		ch.arrive(f)
	}
}

// catchUp fills the gaps from history, as a client does when a message
// waits too long.
func (ch *chatter) catchUp() {
	ch.t.Helper()
	ch.drain()
	for more := true; more; {
		f, err := ch.c.Call(chatWait, map[string]any{"type": "history", "room": ch.room, "after": ch.last, "epoch": ch.epoch})
		if err != nil || f.Type != "history" {
			ch.t.Fatalf("%s: history: %v %s", ch.c.User, err, f.Raw)
		}
		for _, m := range f.Messages {
			ch.arrive(m)
		}
		more = f.More
		ch.drain()
	}
}

// noAnswer is say's code for a request that got no answer in time.
const noAnswer = "no answer"

// sayWait bounds the wait for a say's answer when a lost one is allowed:
// beyond the service's own request timeout (5 s), after which it answers
// unavailable.
const sayWait = 10 * time.Second

// say sends text and returns the seq it was stored under, or the error
// code ("unavailable" while the bus or JetStream fails over).
func (ch *chatter) say(text string) (uint64, string) {
	ch.t.Helper()
	seq, code := ch.trySay(text, chatWait)
	if code == noAnswer {
		ch.t.Fatalf("%s: say %q: no answer within %v", ch.c.User, text, chatWait)
	}
	return seq, code
}

// trySay is say where the answer may not come: a request in flight
// through a NATS node that dies is lost (core NATS delivers at most once),
// and a client can only wait and try again. Its outcome is unknown: the
// message may have been stored.
func (ch *chatter) trySay(text string, wait time.Duration) (uint64, string) {
	ch.t.Helper()
	f, err := ch.c.Call(wait, map[string]any{"type": "say", "room": ch.room, "text": text})
	if err != nil {
		return 0, noAnswer
	}
	if f.Type == "error" {
		return 0, f.Code
	}
	if f.Type != "sent" {
		ch.t.Fatalf("%s: say: %s", ch.c.User, f.Raw)
	}
	return f.Seq, ""
}

// texts are the texts of the messages shown.
func (ch *chatter) texts() []string {
	out := make([]string, len(ch.shown))
	for i, m := range ch.shown {
		out[i] = m.Text
	}
	return out
}

// awaitPresence waits for the presence event of user in the room and
// returns when it came.
func (ch *chatter) awaitPresence(user, event string, limit time.Duration) time.Time {
	ch.t.Helper()
	if _, err := ch.c.Await("presence "+event+" of "+user, limit, func(f chattest.Frame) bool {
		return f.Type == "presence" && f.Room == ch.room && f.User == user && f.Event == event
	}); err != nil {
		ch.t.Fatal(err)
	}
	return time.Now()
}

// streamInfo is a chat stream's description, once it exists (and, on a
// cluster, has a leader).
func streamInfo(t *testing.T, nc *nats.Conn, name string) *jetstream.StreamInfo {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.StreamInfo
	waitLong(t, "stream "+name, time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			return false
		}
		info, err = s.Info(ctx)
		return err == nil && (info.Cluster == nil || info.Cluster.Name == "" || info.Cluster.Leader != "")
	})
	return info
}

// chatAcrossHosts: users on host 1 and host 3 (which runs no chat
// instance) share a room: each sees the other in the member list, hears
// the other, and a third on host 2 finds both messages in the history.
// The chat's stream and buckets have three replicas.
func (lf *localFleet) chatAcrossHosts(t *testing.T, nc *nats.Conn) (alice, bob *chatter) {
	for _, name := range chatStreams {
		info := streamInfo(t, nc, name)
		if info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("%s: %d replicas (%d peers beside leader %s), want 3 on a cluster of 3", name, info.Config.Replicas, len(info.Cluster.Replicas), info.Cluster.Leader)
		}
	}
	alice = register(t, lf.ws(1), "alice", "fleet")
	bob = register(t, lf.ws(3), "bob", "fleet")
	alice.awaitPresence("bob", "join", chatWait)
	if f, err := bob.c.Call(chatWait, map[string]any{"type": "who", "room": "fleet"}); err != nil || !slices.Equal(f.Members, []string{"alice", "bob"}) {
		t.Fatalf("members seen from host3: %v %s", err, f.Raw)
	}
	for _, c := range []*chatter{alice, bob} {
		if _, code := c.say("hello from " + c.c.User); code != "" {
			t.Fatalf("%s: say: %s", c.c.User, code)
		}
	}
	want := []string{"hello from alice", "hello from bob"}
	for _, c := range []*chatter{alice, bob} {
		waitLong(t, c.c.User+" hearing both", chatWait, func() bool { c.drain(); return len(c.shown) == 2 })
		if !slices.Equal(c.texts(), want) {
			t.Fatalf("%s heard %q, want %q", c.c.User, c.texts(), want)
		}
	}
	carol := register(t, lf.ws(2), "carol", "fleet")
	if !slices.Equal(carol.texts(), want) {
		t.Fatalf("carol's history on host2: %q, want %q", carol.texts(), want)
	}
	carol.c.Close()
	return alice, bob
}

// chatThroughNATSLoss: while alice and bob talk, the NATS node that leads
// the history stream is killed with -9. Every message the service said it
// stored is in the history afterwards, each once, in one chain; the
// connections stay up through it.
func (lf *localFleet) chatThroughNATSLoss(t *testing.T, nc *nats.Conn, alice, bob *chatter) {
	leader := streamInfo(t, nc, chatStreams[0]).Cluster.Leader
	pid := lf.pid(leader)
	const each = 24
	stored := map[string]bool{}
	unknown := map[string]int{} // outcomes other than stored, by code
	start := time.Now()
	for i := range each {
		if i == each/3 {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed NATS node %s, the history stream's leader", leader)
		}
		for _, c := range []*chatter{alice, bob} {
			text := fmt.Sprintf("%s %d", c.c.User, i)
			switch _, code := c.trySay(text, sayWait); code {
			case "":
				stored[text] = true
			case "unavailable", noAnswer:
				unknown[code]++
			default:
				t.Fatalf("%s: %s", text, code)
			}
		}
		time.Sleep(100 * time.Millisecond) // under the chat's 10 says per second
	}
	for _, c := range []*chatter{alice, bob} {
		c.catchUp()
		got := map[string]bool{}
		for _, text := range c.texts() {
			got[text] = true
		}
		for text := range stored {
			if !got[text] {
				t.Errorf("%s: stored message %q missing after the node died", c.c.User, text)
			}
		}
		if len(c.waiting) > 0 || len(c.shown) != len(got) {
			t.Errorf("%s: %d messages waiting behind a gap, %d shown twice", c.c.User, len(c.waiting), len(c.shown)-len(got))
		}
	}
	t.Logf("chat through the loss of %s: %d of %d says confirmed stored, others %v, in %v", leader, len(stored), 2*each, unknown, time.Since(start).Round(time.Millisecond))
	if len(stored) < each {
		t.Errorf("only %d of %d says stored: the chat did not recover from the loss of one node", len(stored), 2*each)
	}
	if info := streamInfo(t, nc, chatStreams[0]); info.Cluster.Leader == leader {
		t.Errorf("the history stream is still led by the dead node %s", leader)
	}
}

// chatThroughHostLoss: bob is on host 3 and dave on host 2, which runs a
// chat instance; host 2 is killed with -9 (by kill, which returns the
// time of the kill once the bus has dropped every connection of its
// processes) while alice
// talks. Bob's connection stays; dave's dies, and he reconnects to the
// next host of his list with his token, resumes the room after the last
// seq he showed and sees every message once, in order. Alice sees the
// dead host's users leave within three heartbeats.
func (lf *localFleet) chatThroughHostLoss(t *testing.T, alice, bob *chatter, kill func() time.Time) {
	dave := register(t, lf.ws(2), "dave", "fleet")
	alice.awaitPresence("dave", "join", chatWait)
	ghost := register(t, lf.ws(2), "ghost", "fleet")
	alice.awaitPresence("ghost", "join", chatWait)
	seq, code := alice.say("before the host died")
	if code != "" {
		t.Fatalf("say: %s", code)
	}
	waitLong(t, "dave hearing alice", chatWait, func() bool { dave.drain(); return dave.last >= seq })
	_ = ghost
	killed := kill()
	var want []string
	for i := range 10 {
		text := fmt.Sprintf("while dave is away %d", i)
		if _, code := alice.say(text); code != "" {
			t.Fatalf("say while host2 is gone: %s", code)
		}
		want = append(want, text)
	}
	// Nobody reconnects as ghost: alice sees the dead worker's user leave.
	left := alice.awaitPresence("ghost", "leave", 30*time.Second)
	t.Logf("presence dropped the dead host's user %v after the kill (three heartbeats: 3s)", left.Sub(killed).Round(time.Millisecond))
	if d := left.Sub(killed); d > 10*time.Second {
		t.Errorf("the dead host's user left presence %v after the kill; three heartbeats are 3 s", d)
	}

	// dave, as the page does: the next address of his list, his token, the
	// room again after the last seq he showed.
	ctx, cancel := context.WithTimeout(context.Background(), chatWait)
	defer cancel()
	c, err := chattest.Dial(ctx, lf.ws(3), dave.c.Token)
	if err != nil {
		t.Fatalf("dave reconnecting to host3: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.User, c.Token = "dave", dave.c.Token
	if _, err := c.Await("welcome", chatWait, func(f chattest.Frame) bool { return f.Type == "welcome" }); err != nil {
		t.Fatal(err)
	}
	dave.c = c
	before := len(dave.shown)
	if members := dave.join(); !slices.Contains(members, "dave") || !slices.Contains(members, "alice") || slices.Contains(members, "ghost") {
		t.Errorf("members after dave's return: %q", members)
	}
	seq, code = alice.say("welcome back")
	if code != "" {
		t.Fatalf("say: %s", code)
	}
	want = append(want, "welcome back")
	waitLong(t, "dave hearing alice after his return", chatWait, func() bool { dave.drain(); return dave.last >= seq })
	dave.catchUp()
	if got := dave.texts()[before:]; !slices.Equal(got, want) || len(dave.waiting) != 0 {
		t.Fatalf("dave after resuming on host3: %q (%d waiting), want %q", got, len(dave.waiting), want)
	}
	waitLong(t, "bob hearing it all on host3", chatWait, func() bool { bob.drain(); return bob.last >= seq })
	if got := bob.texts()[len(bob.texts())-len(want):]; !slices.Equal(got, want) || len(bob.waiting) != 0 {
		t.Errorf("bob on host3 through the loss of host2: %q, %d waiting", got, len(bob.waiting))
	}
}

// On one host with the embedded NATS server (no cluster), the chat's
// stream and buckets have one replica: the count is chosen from the
// cluster, with no setting.
func TestChatStoreOnTheEmbeddedServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "1", "--services", "chat")
	nc, err := nats.Connect(f.nats)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, name := range chatStreams {
		if info := streamInfo(t, nc, name); info.Config.Replicas != 1 {
			t.Errorf("%s: %d replicas on the embedded server, want 1", name, info.Config.Replicas)
		}
	}
}
