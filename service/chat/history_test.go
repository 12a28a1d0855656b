package chat

import (
	"context"
	"github.com/shoal-gw/shoal/shard"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// seqsOf returns the seqs of messages.
func seqsOf(msgs []frame) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func wantSeqs(t testing.TB, what string, got []frame, want []uint64) {
	t.Helper()
	g := seqsOf(got)
	if len(g) != len(want) {
		t.Fatalf("%s: seqs %v, want %v", what, g, want)
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("%s: seqs %v, want %v", what, g, want)
		}
	}
}

// sayN says n numbered messages and returns their seqs.
func sayN(c *client, room string, from, n int) []uint64 {
	var seqs []uint64
	for i := from; i < from+n; i++ {
		seqs = append(seqs, c.say(room, "m"+strconv.Itoa(i)).Seq)
	}
	return seqs
}

// TestHistory covers the history request and joined's history.
func TestHistory(t *testing.T) {
	r := newRig(t, 1, 1)
	sh := r.shards[0]
	a := r.register(sh, "alice")
	a.join("lobby")
	a.join("noise")
	var seqs []uint64
	for i := range 60 {
		seqs = append(seqs, a.say("lobby", "m"+strconv.Itoa(i)).Seq)
		if i%7 == 0 {
			a.say("noise", "n") // other rooms' messages interleave in the stream
		}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("seqs not increasing: %v", seqs)
		}
	}
	h := func(msg map[string]any) frame {
		t.Helper()
		msg["type"], msg["room"] = "history", "lobby"
		return a.mustCall(TypeHistory, msg)
	}
	f := h(map[string]any{})
	wantSeqs(t, "history", f.Messages, seqs[10:])
	if !f.More || f.Epoch == "" {
		t.Fatalf("history: more %v epoch %q", f.More, f.Epoch)
	}
	for i, m := range f.Messages {
		if m.Type != TypeMessage || m.Room != "lobby" || m.User != "alice" || m.Text != "m"+strconv.Itoa(i+10) || m.Epoch != f.Epoch {
			t.Fatalf("history message %d: %+v", i, m)
		}
		if i > 0 && m.Prev != f.Messages[i-1].Seq {
			t.Fatalf("message %d prev %d, want %d", i, m.Prev, f.Messages[i-1].Seq)
		}
	}
	f = h(map[string]any{"limit": 5})
	wantSeqs(t, "history limit 5", f.Messages, seqs[55:])
	f = h(map[string]any{"limit": 5000})
	wantSeqs(t, "history limit above the maximum", f.Messages, seqs)
	if f.More {
		t.Fatal("history of everything: more")
	}
	f = h(map[string]any{"before": seqs[20], "limit": 8})
	wantSeqs(t, "history before", f.Messages, seqs[12:20])
	if !f.More {
		t.Fatal("history before: no more")
	}
	f = h(map[string]any{"before": seqs[3]})
	wantSeqs(t, "history before the 4th", f.Messages, seqs[:3])
	if f.More {
		t.Fatal("history before the 4th: more")
	}
	f = h(map[string]any{"after": seqs[40], "limit": 10})
	wantSeqs(t, "history after", f.Messages, seqs[41:51])
	if !f.More {
		t.Fatal("history after with a limit: no more")
	}
	f = h(map[string]any{"after": seqs[40]})
	wantSeqs(t, "history after, default limit", f.Messages, seqs[41:])
	if f.More {
		t.Fatal("history after to the end: more")
	}
	f = h(map[string]any{"after": 0})
	wantSeqs(t, "history after 0", f.Messages, seqs)
	f = h(map[string]any{"after": seqs[59]})
	wantSeqs(t, "history after the last", f.Messages, nil)
	// An after from another epoch means nothing: the last messages instead.
	f = h(map[string]any{"after": seqs[40], "epoch": "123"})
	wantSeqs(t, "history after from another epoch", f.Messages, seqs[10:])

	for _, bad := range []map[string]any{
		{"limit": 0}, {"limit": -3}, {"before": 0}, {"before": 5, "after": 1},
	} {
		bad["type"], bad["room"] = "history", "lobby"
		a.wantError(CodeBadRequest, bad)
	}

	// joined: the last 50 by default, the ones after a seq of this epoch,
	// or the last ones when the epoch is another.
	b := r.register(sh, "bob")
	j := b.join("lobby")
	wantSeqs(t, "joined", j.History, seqs[10:])
	if !j.More {
		t.Fatal("joined with more than 50 messages: no more")
	}
	j = b.mustCall(TypeJoined, map[string]any{"type": "join", "room": "lobby", "limit": 3})
	wantSeqs(t, "joined limit 3", j.History, seqs[57:])
	j = b.mustCall(TypeJoined, map[string]any{"type": "join", "room": "lobby", "after": seqs[50], "epoch": j.Epoch})
	wantSeqs(t, "joined after", j.History, seqs[51:])
	if j.More {
		t.Fatal("joined after to the end: more")
	}
	j = b.mustCall(TypeJoined, map[string]any{"type": "join", "room": "lobby", "after": seqs[50], "epoch": "other", "limit": 4})
	wantSeqs(t, "joined after from another epoch", j.History, seqs[56:])
	b.wantError(CodeBadRequest, map[string]any{"type": "join", "room": "lobby", "limit": 0})
}

// TestHistoryFitsTheBus: a page of history larger than one NATS message
// comes in parts, each marked more, and asking for the rest gets every
// message once; joined's history likewise.
func TestHistoryFitsTheBus(t *testing.T) {
	const payload = 64 << 10
	r := newRig(t, 1, 1, withMaxPayload(payload), withConfig(func(c *Config) { c.History = 1000 }),
		withShard(func(c *shard.Config) { c.MaxMessage = 16 << 10 }))
	a := r.register(r.shards[0], "alice")
	a.join("lobby")
	// 60 messages of 3 KiB: three times what one message of the bus holds.
	text := strings.Repeat("x", 3<<10)
	var seqs []uint64
	for range 60 {
		seqs = append(seqs, a.say("lobby", text).Seq)
	}
	var got []uint64
	var pages int
	after := uint64(0)
	for {
		f := a.mustCall(TypeHistory, map[string]any{"type": "history", "room": "lobby", "after": after, "limit": 1000})
		pages++
		if len(f.Messages) == 0 {
			t.Fatalf("page %d after %d: no messages, more %v", pages, after, f.More)
		}
		got = append(got, seqsOf(f.Messages)...)
		after = got[len(got)-1]
		if !f.More {
			break
		}
	}
	if !slices.Equal(got, seqs) {
		t.Fatalf("history in %d pages: seqs %v, want %v", pages, got, seqs)
	}
	if pages < 3 {
		t.Fatalf("%d pages for three times a bus message", pages)
	}
	// The last page of 100 keeps the newest that fit, with more.
	f := a.mustCall(TypeHistory, map[string]any{"type": "history", "room": "lobby", "limit": 100})
	if n := len(f.Messages); n == 0 || n >= 60 || !f.More || !slices.Equal(seqsOf(f.Messages), seqs[60-n:]) {
		t.Fatalf("last page: %d messages, more %v", n, f.More)
	}
	b := r.register(r.shards[0], "bob")
	j := b.mustCall(TypeJoined, map[string]any{"type": "join", "room": "lobby", "after": 0, "epoch": f.Epoch})
	if n := len(j.History); n == 0 || n >= 60 || !j.More || !slices.Equal(seqsOf(j.History), seqs[:n]) {
		t.Fatalf("joined after 0: %d messages, more %v", n, j.More)
	}
}

// TestHistoryKeepsLast checks that a room keeps only its last History
// messages.
func TestHistoryKeepsLast(t *testing.T) {
	r := newRig(t, 1, 1, withConfig(func(c *Config) { c.History = 5 }))
	a := r.register(r.shards[0], "alice")
	a.join("lobby")
	seqs := sayN(a, "lobby", 0, 8)
	f := a.mustCall(TypeHistory, map[string]any{"type": "history", "room": "lobby"})
	wantSeqs(t, "history", f.Messages, seqs[3:])
	if f.More {
		t.Fatal("more beyond what is kept")
	}
	// The chain goes on from the last seq.
	s := a.say("lobby", "next")
	if m := a.message("lobby", "next"); m.Prev != seqs[7] || m.Seq != s.Seq {
		t.Fatalf("message after the limit: %s", m.Raw)
	}
}

// TestResume checks that a client reconnecting with its token and joining
// with after=<last seq it showed> gets exactly what it missed: no gap, no
// duplicate.
func TestResume(t *testing.T) {
	r := newRig(t, 1, 1)
	sh := r.shards[0]
	a, b := r.register(sh, "alice"), r.register(sh, "bob")
	a.join("lobby")
	b.join("lobby")
	first := sayN(b, "lobby", 0, 5)
	var last frame
	for i := range 5 {
		last = a.message("lobby", "m"+strconv.Itoa(i))
	}
	if last.Seq != first[4] {
		t.Fatalf("alice's last seq %d, want %d", last.Seq, first[4])
	}
	a.close()
	missed := sayN(b, "lobby", 5, 5)

	a2 := r.tab(sh, a)
	j := a2.mustCall(TypeJoined, map[string]any{"type": "join", "room": "lobby", "after": last.Seq, "epoch": last.Epoch})
	wantSeqs(t, "resumed history", j.History, missed)
	if j.History[0].Prev != last.Seq {
		t.Fatalf("first resumed message prev %d, want %d", j.History[0].Prev, last.Seq)
	}
	// Live messages continue the chain.
	s := b.say("lobby", "live")
	m := a2.message("lobby", "live")
	if m.Seq != s.Seq || m.Prev != missed[4] {
		t.Fatalf("live message after resume: %s", m.Raw)
	}
}

// TestHistorySurvivesRestarts restarts the service, then everything
// (NATS with the same store), then recreates the stream.
func TestHistorySurvivesRestarts(t *testing.T) {
	r := newRig(t, 1, 1, withBeat(100*time.Millisecond), withConfig(func(c *Config) {
		c.ShardTimeout = 500 * time.Millisecond
	}))
	a := r.register(r.shards[0], "alice")
	a.join("lobby")
	seqs := sayN(a, "lobby", 0, 5)
	epoch := a.message("lobby", "m4").Epoch

	r.instances[0].stop()
	r.startInstance()
	b := r.register(r.shards[0], "bob")
	j := b.join("lobby")
	wantSeqs(t, "history after a service restart", j.History, seqs)
	if j.Epoch != epoch {
		t.Fatalf("epoch after a service restart %s, want %s", j.Epoch, epoch)
	}
	if len(j.Members) != 2 {
		t.Fatalf("members after a service restart: %v", j.Members)
	}

	// Everything down, then up again on the same store.
	r.instances[1].stop()
	r.shards[0].crash()
	r.restartNATS()
	r.startInstance()
	sh := r.startShard("")
	c := r.dial(sh, "")
	c.User = "alice"
	c.mustCall(TypeWelcome, map[string]any{"type": "login", "user": "alice", "password": "password-alice"})
	j = c.join("lobby")
	wantSeqs(t, "history after a restart of everything", j.History, seqs)
	if j.Epoch != epoch {
		t.Fatalf("epoch after a restart of everything %s, want %s", j.Epoch, epoch)
	}
	// The old shard's connections are gone from presence.
	waitFor(t, "presence of the dead shard dropped", func() bool {
		w := c.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
		return len(w.Members) == 1 && w.Members[0] == "alice" && len(r.conns("lobby", "alice")) == 1
	})
	next := c.say("lobby", "after restart")
	if m := c.message("lobby", "after restart"); m.Prev != seqs[4] || m.Seq != next.Seq {
		t.Fatalf("chain after restart: %s", m.Raw)
	}

	// A deleted and recreated stream has another epoch; a seq of the old
	// one is not trusted.
	r.instances[2].stop()
	js, err := jetstream.New(r.connect())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "shoal_chat_history"); err != nil {
		t.Fatal(err)
	}
	r.startInstance()
	j = c.mustCall(TypeJoined, map[string]any{"type": "join", "room": "lobby", "after": seqs[2], "epoch": epoch})
	if j.Epoch == epoch || j.Epoch == "" {
		t.Fatalf("epoch %q after the stream was recreated, want a new one", j.Epoch)
	}
	wantSeqs(t, "history of a new stream", j.History, nil)
	s := c.say("lobby", "new era")
	if m := c.message("lobby", "new era"); m.Prev != 0 || m.Seq != s.Seq || m.Epoch != j.Epoch {
		t.Fatalf("first message of the new stream: %s", m.Raw)
	}
}

// TestStreamRecreatedWhileRunning deletes the history stream under a
// running instance: the next say makes it again, with a new epoch.
func TestStreamRecreatedWhileRunning(t *testing.T) {
	r := newRig(t, 1, 1)
	a := r.register(r.shards[0], "alice")
	j := a.join("lobby")
	sayN(a, "lobby", 0, 3)
	js, err := jetstream.New(r.connect())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), "shoal_chat_history"); err != nil {
		t.Fatal(err)
	}
	s := a.say("lobby", "again")
	m := a.message("lobby", "again")
	if m.Epoch == j.Epoch || m.Prev != 0 || m.Seq != s.Seq {
		t.Fatalf("message after the stream was deleted: %s (old epoch %s)", m.Raw, j.Epoch)
	}
	f := a.mustCall(TypeHistory, map[string]any{"type": "history", "room": "lobby"})
	if f.Epoch != m.Epoch || len(f.Messages) != 1 {
		t.Fatalf("history after the stream was recreated: %s", f.Raw)
	}
}

// TestNATSRestartUnderRunningService restarts NATS (same store) under a
// running instance and shard: both reconnect, the presence watch resumes,
// and history and presence carry on.
//
// The shards beat every 100ms, so the outage is longer than three beats:
// silence while the service itself is cut off drops nobody's presence.
func TestNATSRestartUnderRunningService(t *testing.T) {
	r := newRig(t, 1, 1, withBeat(testBeat), withConfig(func(c *Config) { c.ShardTimeout = 3 * testBeat }))
	a := r.register(r.shards[0], "alice")
	a.join("lobby")
	first := a.say("lobby", "before")
	r.restartNATS()
	b := r.register(r.shards[0], "bob")
	j := b.join("lobby")
	if len(j.History) != 1 || j.History[0].Seq != first.Seq {
		t.Fatalf("history after the NATS restart: %s", j.Raw)
	}
	if len(j.Members) != 2 {
		t.Fatalf("members after the NATS restart: %v", j.Members)
	}
	a.presence("lobby", "bob", EventJoin)
	s := b.say("lobby", "after")
	if m := a.message("lobby", "after"); m.Prev != first.Seq || m.Seq != s.Seq {
		t.Fatalf("message after the NATS restart: %s", m.Raw)
	}
	time.Sleep(5 * testBeat) // sweeps and silence checks happen meanwhile
	who := b.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "alice,bob" {
		t.Fatalf("who after the NATS restart: %s", who.Raw)
	}
	b.none("alice leaving", func(f frame) bool { return f.Type == TypePresence && f.Event == EventLeave })
}
