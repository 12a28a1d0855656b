package chat

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestAccounts covers register, login and tokens, with their errors.
func TestAccounts(t *testing.T) {
	r := newRig(t, 1, 1)
	sh := r.shards[0]

	a := r.dial(sh, "")
	a.User = "alice"
	before := time.Now()
	w := a.mustCall(TypeWelcome, map[string]any{"type": "register", "user": "alice", "password": "correct horse"})
	if w.User != "alice" || w.Token == "" || string(w.ID) != "1" {
		t.Fatalf("welcome %s", w.Raw)
	}
	a.Token = w.Token
	exp, err := time.Parse(time.RFC3339, w.Expires)
	if err != nil || exp.Before(before.Add(DefaultTokenTTL-time.Minute)) || exp.After(before.Add(DefaultTokenTTL+time.Minute)) {
		t.Fatalf("expires %q (%v), want about 24h from now", w.Expires, err)
	}
	if u, err := key.Verify(w.Token, "chat", time.Now()); err != nil || u != "alice" {
		t.Fatalf("token names %q (%v)", u, err)
	}
	// The connection is alice now.
	a.join("lobby")
	// Re-authenticating as the same user is allowed, as another is not.
	a.mustCall(TypeWelcome, map[string]any{"type": "login", "user": "alice", "password": "correct horse"})
	a.wantError(CodeBadRequest, map[string]any{"type": "login", "user": "bob", "password": "whatever1"})

	b := r.dial(sh, "")
	b.wantError(CodeUserTaken, map[string]any{"type": "register", "user": "alice", "password": "another one"})
	b.wantError(CodeBadCredentials, map[string]any{"type": "login", "user": "alice", "password": "wrong password"})
	b.wantError(CodeBadCredentials, map[string]any{"type": "login", "user": "nobody", "password": "correct horse"})
	// Anything but register and login needs a user.
	for _, typ := range []string{"join", "say", "leave", "who", "rooms", "history", "ping"} {
		b.wantError(CodeUnauthorized, map[string]any{"type": typ, "room": "lobby", "text": "x"})
	}

	c := r.dial(sh, "")
	for _, bad := range []map[string]any{
		{"type": "register", "user": "", "password": "long enough"},
		{"type": "register", "user": "has space", "password": "long enough"},
		{"type": "register", "user": "dot.ted", "password": "long enough"},
		{"type": "register", "user": strings.Repeat("u", 33), "password": "long enough"},
		{"type": "register", "user": "carol", "password": "short"},
		{"type": "register", "user": "carol", "password": strings.Repeat("p", 73)},
		{"type": "login", "user": "carol"},
	} {
		c.wantError(CodeBadRequest, bad)
	}
	c.mustCall(TypeWelcome, map[string]any{"type": "register", "user": strings.Repeat("u", 32), "password": strings.Repeat("p", 72)})

	// A token makes a new connection that user from its first frame; its
	// welcome carries a fresh token.
	tab := r.tab(sh, a)
	if u, err := key.Verify(tab.Token, "chat", time.Now()); err != nil || u != "alice" {
		t.Fatalf("the welcome at open has token %q naming %q (%v)", tab.Token, u, err)
	}
	tab.join("lobby")

	// A good token naming a user the chat cannot have gets no welcome,
	// and every request is unauthorized.
	odd, _, err := key.Sign("dot.ted", []string{"chat"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	o, err := dialChat(sh.addr, odd)
	if err != nil {
		t.Fatal(err)
	}
	o.t = t
	t.Cleanup(o.close)
	o.wantError(CodeUnauthorized, map[string]any{"type": "join", "room": "lobby"})
	o.none("a welcome", func(f frame) bool { return f.Type == TypeWelcome })

	// A bad token is refused at the handshake.
	for _, tok := range []string{"garbage", w.Token[:len(w.Token)-2] + "xx", expiredToken("alice")} {
		_, err := dialChat(sh.addr, tok)
		var se ws.StatusError
		if !errors.As(err, &se) || int(se) != 401 {
			t.Fatalf("dial with token %.20q: %v, want HTTP 401", tok, err)
		}
	}

	// Register and login attempts are limited per connection.
	d := r.dial(sh, "")
	limited := false
	for range authBurst + 2 {
		f := d.call(map[string]any{"type": "login", "user": "alice", "password": "wrong password"})
		if f.Code == CodeRateLimited {
			limited = true
			break
		}
		if f.Code != CodeBadCredentials {
			t.Fatalf("login: %s", f.Raw)
		}
	}
	if !limited {
		t.Fatalf("%d quick logins on one connection, none rate_limited", authBurst+2)
	}
}

func expiredToken(user string) string {
	tok, _, _ := key.Sign(user, []string{"chat"}, time.Minute, time.Now().Add(-time.Hour))
	return tok
}

// TestProtocolErrors covers malformed messages and the id echo.
func TestProtocolErrors(t *testing.T) {
	r := newRig(t, 1, 1)
	a := r.register(r.shards[0], "alice")

	for _, raw := range []string{`not json`, `{"type":"ping"`, `[1,2]`, `"ping"`, `42`, `null`, ` `, `{"type":"ping"} trailing`} {
		a.sendRaw(raw)
		f := a.await("error for "+raw, func(f frame) bool { return f.Type == TypeError })
		if f.Code != CodeBadJSON {
			t.Fatalf("%q: %s, want bad_json", raw, f.Raw)
		}
	}
	if err := a.SendBinary([]byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if f := a.await("error for binary", func(f frame) bool { return f.Type == TypeError }); f.Code != CodeBadJSON {
		t.Fatalf("binary frame: %s, want bad_json", f.Raw)
	}

	cases := []struct {
		in, code, id string
	}{
		{`{"type":"shout","id":7}`, CodeUnknownType, "7"},
		{`{"id":"x"}`, CodeBadRequest, `"x"`},
		{`{"type":5,"id":8}`, CodeBadRequest, "8"},
		{`{"type":"join","room":5,"id":9}`, CodeBadRequest, "9"},
		{`{"type":"history","room":"lobby","after":-1,"id":10}`, CodeBadRequest, "10"},
		{`{"type":"history","room":"lobby","limit":1.5,"id":11}`, CodeBadRequest, "11"},
		{`{"type":"ping","id":{"a":1}}`, CodeBadRequest, ""},
		{`{"type":"ping","id":[1]}`, CodeBadRequest, ""},
		{`{"type":"join","room":"no.dots","id":12}`, CodeBadRequest, "12"},
		{`{"type":"join","room":"","id":13}`, CodeBadRequest, "13"},
		{`{"type":"join","room":"` + strings.Repeat("r", 65) + `","id":14}`, CodeBadRequest, "14"},
	}
	for _, c := range cases {
		a.sendRaw(c.in)
		f := a.await("error for "+c.in, func(f frame) bool { return f.Type == TypeError })
		if f.Code != c.code || string(f.ID) != c.id {
			t.Fatalf("%s: %s, want %s with id %s", c.in, f.Raw, c.code, c.id)
		}
	}

	// Ids come back byte for byte, strings and numbers of any size.
	for _, id := range []string{`"abc"`, `"ü \" \\"`, `"<&>"`, `12345678901234567890123`, `-1.5e3`, `0`} {
		a.sendRaw(`{"type":"ping","id":` + id + `}`)
		f := a.await("pong "+id, func(f frame) bool { return f.Type == TypePong })
		if !strings.Contains(f.Raw, `"id":`+id) {
			t.Fatalf("ping with id %s: %s", id, f.Raw)
		}
	}
	a.sendRaw(`{"type":"ping"}`)
	if f := a.await("pong", func(f frame) bool { return f.Type == TypePong }); f.Raw != `{"type":"pong"}` {
		t.Fatalf("pong without id: %s", f.Raw)
	}
}

// TestRooms covers join, who, rooms, leave, and the room errors.
func TestRooms(t *testing.T) {
	r := newRig(t, 1, 1)
	sh := r.shards[0]
	a, b := r.register(sh, "alice"), r.register(sh, "bob")

	for _, typ := range []string{"who", "history", "leave"} {
		f := a.wantError(CodeNoSuchRoom, map[string]any{"type": typ, "room": "void"})
		if f.Room != "void" {
			t.Fatalf("%s error without the room: %s", typ, f.Raw)
		}
	}
	a.wantError(CodeNoSuchRoom, map[string]any{"type": "say", "room": "void", "text": "hello"})

	j := a.join("lobby")
	if len(j.Members) != 1 || j.Members[0] != "alice" || j.Epoch == "" || j.History == nil || j.Rev == 0 {
		t.Fatalf("joined %s", j.Raw)
	}
	a.presence("lobby", "alice", EventJoin)
	jb := b.join("lobby")
	if strings.Join(jb.Members, ",") != "alice,bob" {
		t.Fatalf("bob's joined: %s", jb.Raw)
	}
	p := a.presence("lobby", "bob", EventJoin)
	if p.Rev == 0 || p.Rev <= j.Rev {
		t.Fatalf("presence rev %d not after alice's snapshot %d", p.Rev, j.Rev)
	}
	// Joining again answers joined again and tells nobody.
	again := b.join("lobby")
	if strings.Join(again.Members, ",") != "alice,bob" {
		t.Fatalf("second join: %s", again.Raw)
	}
	b.join("kitchen")
	a.join("attic")
	a.wantError(CodeNotMember, map[string]any{"type": "leave", "room": "kitchen"})
	a.wantError(CodeNotMember, map[string]any{"type": "say", "room": "kitchen", "text": "hi"})

	who := b.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "alice,bob" || who.Rev == 0 {
		t.Fatalf("who: %s", who.Raw)
	}
	rooms := a.mustCall(TypeRooms, map[string]any{"type": "rooms"})
	got := []string{}
	for _, ri := range rooms.Rooms {
		got = append(got, ri.Room+"="+strconv.Itoa(ri.Members))
	}
	if strings.Join(got, " ") != "lobby=2 attic=1 kitchen=1" {
		t.Fatalf("rooms: %s", rooms.Raw)
	}

	left := b.mustCall(TypeLeft, map[string]any{"type": "leave", "room": "lobby"})
	if left.Room != "lobby" {
		t.Fatalf("left: %s", left.Raw)
	}
	lp := a.presence("lobby", "bob", EventLeave)
	if lp.Rev <= p.Rev {
		t.Fatalf("leave rev %d not after join rev %d", lp.Rev, p.Rev)
	}
	b.wantError(CodeNotMember, map[string]any{"type": "say", "room": "lobby", "text": "still here?"})
	b.wantError(CodeNotMember, map[string]any{"type": "leave", "room": "lobby"})
	who = a.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "alice" {
		t.Fatalf("who after leave: %s", who.Raw)
	}
	// Bob left the room: its messages no longer reach him.
	a.say("lobby", "bob is gone")
	a.message("lobby", "bob is gone")
	b.say("kitchen", "marker")
	b.message("kitchen", "marker")
	b.none("lobby message after leave", func(f frame) bool { return f.Type == TypeMessage && f.Room == "lobby" })
	// A room without members is still listed.
	b.mustCall(TypeLeft, map[string]any{"type": "leave", "room": "kitchen"})
	waitFor(t, "kitchen empty", func() bool {
		rooms := a.mustCall(TypeRooms, map[string]any{"type": "rooms"})
		for _, ri := range rooms.Rooms {
			if ri.Room == "kitchen" {
				return ri.Members == 0
			}
		}
		return false
	})
}

// TestSay covers says, their limits, and what members receive.
func TestSay(t *testing.T) {
	r := newRig(t, 1, 1, withConfig(func(c *Config) {
		c.MaxText = 10
		c.Rate, c.Burst = 0.001, 3
	}))
	sh := r.shards[0]
	a, b := r.register(sh, "alice"), r.register(sh, "bob")
	a.join("lobby")
	b.join("lobby")

	s := a.say("lobby", "  hello  ")
	m := b.message("lobby", "hello")
	if m.User != "alice" || m.Seq != s.Seq || m.Prev != 0 || m.Epoch == "" {
		t.Fatalf("message %s after sent %s", m.Raw, s.Raw)
	}
	if _, err := time.Parse(time.RFC3339, m.TS); err != nil {
		t.Fatalf("ts %q: %v", m.TS, err)
	}
	a.message("lobby", "hello") // the sender gets it too
	s2 := a.say("lobby", "0123456789")
	if m2 := b.message("lobby", "0123456789"); m2.Prev != s.Seq || m2.Seq != s2.Seq {
		t.Fatalf("second message %s, want prev %d", m2.Raw, s.Seq)
	}
	a.wantError(CodeTooLong, map[string]any{"type": "say", "room": "lobby", "text": "0123456789a"})
	a.wantError(CodeBadRequest, map[string]any{"type": "say", "room": "lobby", "text": " \n\t "})
	a.wantError(CodeBadRequest, map[string]any{"type": "say", "room": "lobby"})
	// Three says in the burst; the fourth is limited, for this user only.
	a.say("lobby", "third")
	f := a.wantError(CodeRateLimited, map[string]any{"type": "say", "room": "lobby", "text": "fourth"})
	if f.Room != "lobby" {
		t.Fatalf("rate_limited without the room: %s", f.Raw)
	}
	b.say("lobby", "bob's turn")
}

// TestTabs checks that one user on several connections is one member:
// presence says join once, and leave only when the last connection left or
// dropped.
func TestTabs(t *testing.T) {
	r := newRig(t, 1, 1)
	sh := r.shards[0]
	a, b := r.register(sh, "alice"), r.register(sh, "bob")
	b.join("lobby")
	a.join("lobby")
	b.presence("lobby", "alice", EventJoin)
	a2 := r.tab(sh, a)
	j := a2.join("lobby")
	if strings.Join(j.Members, ",") != "alice,bob" {
		t.Fatalf("second tab's joined: %s", j.Raw)
	}
	a3 := r.tab(sh, a)
	a3.join("lobby")
	// The first tab leaves, the second drops: alice is still there.
	a.mustCall(TypeLeft, map[string]any{"type": "leave", "room": "lobby"})
	a2.close()
	waitFor(t, "one connection of alice left in lobby", func() bool { return len(r.conns("lobby", "alice")) == 1 })
	a3.say("lobby", "still here")
	b.message("lobby", "still here")
	b.none("presence join or leave of alice", func(f frame) bool {
		return f.Type == TypePresence && f.User == "alice" && (f.Event == EventLeave || f.Rev > j.Rev)
	})
	who := b.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "alice,bob" {
		t.Fatalf("who with alice's last tab: %s", who.Raw)
	}
	// The last tab drops: now alice leaves.
	a3.close()
	p := b.presence("lobby", "alice", EventLeave)
	if p.Rev <= j.Rev {
		t.Fatalf("leave rev %d not after %d", p.Rev, j.Rev)
	}
	who = b.mustCall(TypeMembers, map[string]any{"type": "who", "room": "lobby"})
	if strings.Join(who.Members, ",") != "bob" {
		t.Fatalf("who after alice's last tab: %s", who.Raw)
	}
	b.none("a second leave of alice", func(f frame) bool {
		return f.Type == TypePresence && f.User == "alice" && f.Event == EventLeave
	})
}

// TestUnavailable stops JetStream under a running chat: requests that
// need storage answer unavailable, and the connection stays usable.
func TestUnavailable(t *testing.T) {
	r := newRig(t, 1, 1, withConfig(func(c *Config) { c.RequestTimeout = 500 * time.Millisecond }))
	a := r.register(r.shards[0], "alice")
	a.join("lobby")
	if err := r.nats.Server().DisableJetStream(); err != nil {
		t.Fatal(err)
	}
	for _, req := range []map[string]any{
		{"type": "say", "room": "lobby", "text": "anyone?"},
		{"type": "join", "room": "lobby"},
		{"type": "who", "room": "lobby"},
		{"type": "history", "room": "lobby"},
		{"type": "leave", "room": "lobby"},
	} {
		f := a.wantError(CodeUnavailable, req)
		if f.Room != "lobby" {
			t.Fatalf("unavailable without the room: %s", f.Raw)
		}
	}
	b := r.dial(r.shards[0], "")
	b.wantError(CodeUnavailable, map[string]any{"type": "register", "user": "bob", "password": "password-bob"})
	a.mustCall(TypePong, map[string]any{"type": "ping"})
}
