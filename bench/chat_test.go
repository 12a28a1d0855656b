package bench

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestChatPlanRooms(t *testing.T) {
	p := planChatRooms(1000, 50, 3, 1, 7)
	total := 0
	for u, rooms := range p.userRooms {
		if len(rooms) != 3 {
			t.Fatalf("user %d has %d rooms", u, len(rooms))
		}
		s := slices.Clone(rooms)
		slices.Sort(s)
		if len(slices.Compact(s)) != 3 {
			t.Fatalf("user %d is twice in a room: %v", u, rooms)
		}
	}
	for r, n := range p.sizes {
		if n == 0 {
			t.Errorf("room %d is empty", r)
		}
		total += n
	}
	if total != 3000 {
		t.Errorf("%d memberships, want 3000", total)
	}
	largest, median, smallest, used := p.sizeSummary()
	// Zipf 1 over 50 rooms: room 0 draws 1/H(50) = 22% of the draws, room
	// 49 less than 0.5%.
	if largest != p.sizes[0] || largest < 400 || smallest > 40 || median >= largest/4 || used != 50 {
		t.Errorf("sizes largest %d median %d smallest %d used %d: %v", largest, median, smallest, used, p.sizes)
	}
	// Every process computes the same plan from the same flags.
	if q := planChatRooms(1000, 50, 3, 1, 7); !reflect.DeepEqual(p.userRooms, q.userRooms) {
		t.Error("the same flags gave another plan")
	}
	if q := planChatRooms(1000, 50, 3, 1, 8); reflect.DeepEqual(p.userRooms, q.userRooms) {
		t.Error("another seed gave the same plan")
	}
	// Skew 0 is even; a heavy skew and as many rooms per user as rooms
	// still ends with every user in every room.
	even := planChatRooms(1000, 10, 1, 0, 1)
	if l, _, s, _ := even.sizeSummary(); l > 150 || s < 50 {
		t.Errorf("even sizes %v", even.sizes)
	}
	all := planChatRooms(20, 5, 9, 6, 1)
	for _, n := range all.sizes {
		if n != 20 {
			t.Fatalf("every user in every room: sizes %v", all.sizes)
		}
	}
}

func TestChatPlanDrops(t *testing.T) {
	p := planChatRooms(100, 5, 2, 1, 1)
	d := 10 * time.Second
	p.planDrops(10, d)
	seen := map[int]bool{}
	abrupt := 0
	for i, drop := range p.drops {
		if seen[drop.User] || drop.User < 0 || drop.User >= 100 {
			t.Errorf("drop %d: user %d", i, drop.User)
		}
		seen[drop.User] = true
		if drop.At < d/5 || drop.At > 7*d/10 || i > 0 && drop.At < p.drops[i-1].At {
			t.Errorf("drop %d at %s", i, drop.At)
		}
		if drop.Abrupt {
			abrupt++
		}
	}
	if len(p.drops) != 10 || abrupt != 5 {
		t.Errorf("%d drops, %d abrupt", len(p.drops), abrupt)
	}
}

func TestChatText(t *testing.T) {
	pl := Payload{Time: 1767323045678901234, Sender: 4321, Seq: 17}
	for _, size := range []int{24, 64, 200} {
		text := appendChatText(nil, pl, size)
		if size > 40 && len(text) != size {
			t.Errorf("size %d: text of %d bytes", size, len(text))
		}
		got, ok := parseChatText(text)
		if !ok || got != pl {
			t.Errorf("size %d: %q read as %+v %v", size, text, got, ok)
		}
	}
	for _, bad := range []string{"hello", "bench 1 2", "bench 1 2 3x", "bench a 2 3", "bench 99999999999999999999 1 1"} {
		if _, ok := parseChatText([]byte(bad)); ok {
			t.Errorf("%q read as a bench text", bad)
		}
	}
}

// The requests are the protocol's JSON, with the fields PROTOCOL.md
// names.
func TestChatRequests(t *testing.T) {
	pl := Payload{Time: 5, Sender: 6, Seq: 7}
	for _, c := range []struct {
		got  []byte
		want map[string]any
	}{
		{chatSessionRequest("register", "bench-u1", "pw-long-enough"), map[string]any{"type": "register", "user": "bench-u1", "password": "pw-long-enough", "id": "r"}},
		{chatSessionRequest("login", "bench-u1", "pw-long-enough"), map[string]any{"type": "login", "user": "bench-u1", "password": "pw-long-enough", "id": "l"}},
		{chatJoinRequest("bench-r2", 1, false, 0, ""), map[string]any{"type": "join", "room": "bench-r2", "id": "j1"}},
		{chatJoinRequest("bench-r2", 0, true, 1041, "1767323045678901234"), map[string]any{"type": "join", "room": "bench-r2", "after": 1041.0, "epoch": "1767323045678901234", "id": "j0"}},
		{chatHistoryRequest("bench-r2", 2, 9, "17"), map[string]any{"type": "history", "room": "bench-r2", "after": 9.0, "epoch": "17", "id": "h2"}},
		{appendChatSay(nil, "bench-r2", pl, 30, 7), map[string]any{"type": "say", "room": "bench-r2", "text": "bench 5 6 7 xxxxxxxxxxxxxxxxxx", "id": 7.0}},
	} {
		var got map[string]any
		if err := json.Unmarshal(c.got, &got); err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v %v, want %v", c.got, got, err, c.want)
		}
	}
}

func TestChatDecode(t *testing.T) {
	ev := `{"type":"message","room":"lobby","user":"alice","text":"bench 5 6 7","seq":1041,"prev":1040,"ts":"2026-01-12T09:41:07.512Z","epoch":"1767323045678901234"}`
	m, ok := parseChatMessage([]byte(ev))
	if !ok || string(m.room) != "lobby" || string(m.text) != "bench 5 6 7" || m.seq != 1041 || m.prev != 1040 || string(m.epoch) != "1767323045678901234" {
		t.Fatalf("fast path: %+v %v", m, ok)
	}
	// Another order, an escape, trailing bytes: left to encoding/json.
	for _, other := range []string{
		`{"type":"message","user":"alice","room":"lobby","text":"hi","seq":1,"prev":0,"ts":"x","epoch":"1"}`,
		`{"type":"message","room":"lobby","user":"alice","text":"a \"quote\"","seq":1,"prev":0,"ts":"x","epoch":"1"}`,
		ev + " ",
		`{"type":"sent","id":5,"room":"lobby","seq":1041}`,
	} {
		if _, ok := parseChatMessage([]byte(other)); ok {
			t.Errorf("fast path read %s", other)
		}
		if _, ok := decodeChat([]byte(strings.TrimSpace(other))); !ok {
			t.Errorf("decodeChat could not read %s", other)
		}
	}
	f, ok := decodeChat([]byte(`{"type":"joined","id":"j2","room":"lobby","members":["a","b"],"rev":88,"history":[{"type":"message","room":"lobby","user":"b","text":"hi","seq":1040,"prev":1032,"ts":"t","epoch":"9"}],"epoch":"9","more":true}`))
	if !ok || f.Type != "joined" || len(f.History) != 1 || f.History[0].Seq != 1040 || f.History[0].Prev != 1032 || f.Epoch != "9" || !f.More {
		t.Fatalf("joined: %+v", f)
	}
	for _, c := range []struct {
		id    string
		kind  byte
		n     uint64
		isSay bool
		ok    bool
	}{
		{`17`, 0, 17, true, true},
		{`"j3"`, 'j', 3, false, true},
		{`"r"`, 'r', 0, false, true},
		{`"jx"`, 'j', 0, false, false},
		{``, 0, 0, false, false},
		{`1.5`, 0, 1, true, false},
	} {
		kind, n, isSay, ok := chatID(json.RawMessage(c.id))
		if kind != c.kind || n != c.n || isSay != c.isSay || ok != c.ok {
			t.Errorf("id %s: %c %d %v %v", c.id, kind, n, isSay, ok)
		}
	}
}

// finishChat counts every member's expected deliveries against the seqs
// the senders got, over the parts of two processes.
func TestFinishChat(t *testing.T) {
	rep := &Report{Chat: &ChatStats{
		Rooms: 2,
		// Room 0's says got 11, 13, 15, 17 (from both processes); room 1's 12, 14.
		Sent: [][]uint64{{15, 11, 17, 13}, {14, 12}},
		Parts: []ChatPart{
			{
				Shown: [][]uint64{{11, 13, 15, 17}, {12, 14}},
				Members: []ChatMembers{
					{Room: 0, Start: 10, Last: 17, Shown: 4, Present: true, N: 5}, // all
					{Room: 0, Start: 10, Last: 13, Shown: 2, Present: true, N: 2}, // the tail 15, 17 lost
					{Room: 0, Start: 13, Last: 17, Shown: 2, Present: true, N: 1}, // started after 13: expects 15, 17
					{Room: 1, Start: 0, Last: 12, Shown: 1, Present: false, N: 1}, // absent after 12: expects 12 only
				},
			},
			{
				// This process's members never showed 15: lost at each.
				Shown:   [][]uint64{{11, 13, 17}, {}},
				Members: []ChatMembers{{Room: 0, Start: 10, Last: 17, Shown: 3, Present: true, N: 3}},
			},
		},
	}}
	finishChat(rep)
	m, cs := rep.Messages, rep.Chat
	// Expected: 5*4 + 2*4 + 1*2 + 1*1 + 3*4 = 43; lost: 2*2 + 3*1 = 7.
	if m.Expected != 43 || m.Lost != 7 || m.MembersWithLoss != 5 || cs.OutOfOrder != 0 {
		t.Fatalf("expected %d lost %d members with loss %d out of order %d", m.Expected, m.Lost, m.MembersWithLoss, cs.OutOfOrder)
	}
	if cs.Sent != nil || cs.Parts != nil {
		t.Error("the finished report keeps the raw seqs")
	}
	if err := cs.failure(m); !errors.Is(err, ErrDelivery) || !strings.Contains(err.Error(), "7 lost") {
		t.Errorf("failure: %v", err)
	}

	// A member that showed fewer than its process's members did in its
	// range followed another chain.
	rep = &Report{Chat: &ChatStats{Rooms: 1, Sent: [][]uint64{{11, 13}}, Parts: []ChatPart{{
		Shown:   [][]uint64{{11, 12, 13}},
		Members: []ChatMembers{{Room: 0, Start: 10, Last: 13, Shown: 2, Present: true, N: 2}},
	}}}}
	finishChat(rep)
	if rep.Messages.Lost != 0 || rep.Chat.OutOfOrder != 2 {
		t.Errorf("disagreeing chains: lost %d out of order %d", rep.Messages.Lost, rep.Chat.OutOfOrder)
	}

	clean := &ChatStats{}
	if err := clean.failure(MessageStats{Expected: 10}); err != nil {
		t.Errorf("clean run: %v", err)
	}
	for _, bad := range []*ChatStats{{Waiting: 1}, {Absent: 1}, {EpochChanges: 1}, {OutOfOrder: 1}} {
		if err := bad.failure(MessageStats{}); !errors.Is(err, ErrDelivery) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := clean.failure(MessageStats{Duplicated: 1}); !errors.Is(err, ErrDelivery) {
		t.Errorf("duplicates: %v", err)
	}
}

// Children's chat figures add up, their seqs and parts kept for
// finishChat.
func TestMergeChat(t *testing.T) {
	a := &Report{Chat: &ChatStats{Rooms: 2, Planned: 2, Clean: 1, Resumed: 1, SayErrors: map[string]uint64{"rate_limited": 1}, Sent: [][]uint64{{1}, {2}}, Parts: []ChatPart{{}}}}
	b := &Report{Chat: &ChatStats{Rooms: 2, Planned: 3, Abrupt: 2, Resumed: 2, SayErrors: map[string]uint64{"rate_limited": 2}, Sent: [][]uint64{{3}, {}}, Parts: []ChatPart{{}}}}
	out, err := mergeReports([]*Report{a, b})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Chat
	if c.Planned != 5 || c.Clean != 1 || c.Abrupt != 2 || c.Resumed != 3 || c.SayErrors["rate_limited"] != 3 || len(c.Parts) != 2 ||
		!slices.Equal(c.Sent[0], []uint64{1, 3}) || !slices.Equal(c.Sent[1], []uint64{2}) {
		t.Fatalf("merged %+v", c)
	}
	if a.Chat.SayErrors["rate_limited"] != 1 || len(a.Chat.Sent[0]) != 1 {
		t.Error("merging changed a child's report")
	}
	b.Chat.Rooms = 3
	if _, err := mergeReports([]*Report{a, b}); !errors.Is(err, ErrChild) {
		t.Errorf("children with other rooms: %v", err)
	}
}

// startShoalChat starts `shoal serve --services chat` from exe, with
// chatServerEnv and the variables in more, and stops it at the end.
func startShoalChat(t *testing.T, exe string, more ...string) *Target {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tg, err := StartShoalConfig(ctx, exe, ShoalConfig{Workers: 2, Services: "chat", Env: append(slices.Clone(chatServerEnv), more...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tg.Stop(); err != nil {
			t.Errorf("stop shoal: %v", err)
		}
	})
	return tg
}

// checkChatRun checks a chat run that should have found nothing wrong:
// every user in its rooms, every planned reconnect resumed, every say
// answered and delivered once to every member.
func checkChatRun(t *testing.T, rep *Report, users int, out string) {
	t.Helper()
	c, m := rep.Chat, rep.Messages
	if c == nil {
		t.Fatalf("no chat figures:\n%s", out)
	}
	if rep.Conns.Established != int64(users) || c.SetUp != int64(users) {
		t.Errorf("established %d, set up %d, want %d", rep.Conns.Established, c.SetUp, users)
	}
	if c.Planned == 0 || c.Clean == 0 || c.Abrupt == 0 || c.Clean+c.Abrupt != int64(c.Planned) || c.Resumed < int64(c.Planned) {
		t.Errorf("reconnects: planned %d clean %d abrupt %d resumed %d", c.Planned, c.Clean, c.Abrupt, c.Resumed)
	}
	if m.Sent == 0 || c.Answered != m.Sent || c.Unanswered != 0 || len(c.SayErrors) != 0 {
		t.Errorf("says: %d sent, %d answered, %d unanswered, errors %v", m.Sent, c.Answered, c.Unanswered, c.SayErrors)
	}
	if m.Expected == 0 || m.Received != m.Expected || m.Lost != 0 || m.Duplicated != 0 || c.OutOfOrder != 0 || c.Waiting != 0 || c.Absent != 0 || c.EpochChanges != 0 {
		t.Errorf("messages %+v, out of order %d, waiting %d, absent %d, epoch changes %d\n%s", m, c.OutOfOrder, c.Waiting, c.Absent, c.EpochChanges, out)
	}
	if l := rep.Latency["delivery"]; l == nil || l.Count == 0 || uint64(l.Count) > m.Received {
		t.Errorf("delivery latencies %+v of %d received", l, m.Received)
	}
	if l := rep.Latency["sent"]; l == nil || uint64(l.Count) != c.Answered {
		t.Errorf("sent latencies %+v, want %d", l, c.Answered)
	}
	// A user away for the pause missed messages, which its join's history
	// brought back.
	if l := rep.Latency["resumed"]; l == nil || l.Count == 0 {
		t.Errorf("no message came back through a resume: %+v", l)
	}
	if l := rep.Latency["reconnect"]; l == nil || l.Count != c.Resumed {
		t.Errorf("reconnect latencies %+v, want %d", l, c.Resumed)
	}
}

// TestChatAgainstShoal runs the chat scenario against a real shoal serve
// with the chat service: in this process, again with the same users (who
// log in this time), over two bench processes, and against a server that
// keeps too little history for a reconnect to resume, which must fail.
func TestChatAgainstShoal(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds shoal and runs shoal serve")
	}
	exe := shoalBinary(t)
	tg := startShoalChat(t, exe)
	url := tg.URL + "/ws/chat"
	// 30 users in 4 rooms, 3 of them dropping (2 with a close, 1
	// abruptly) for a second while 40 messages a second are said.
	args := []string{"chat", "--url", url, "--users", "30", "--rooms", "4", "--rate", "300", "--msg-rate", "40",
		"--duration", "3s", "--reconnect", "0.1", "--reconnect-pause", "1s", "--drain", "2s"}

	rep, out := runBench(t, append(args, "--user-prefix", "t1-")...)
	checkChatRun(t, rep, 30, out)
	if c := rep.Chat; c.Registered != 30 || c.LoggedIn != 0 || c.Users != 30 || c.Rooms != 4 || c.Memberships != 90 || c.Largest < c.Smallest {
		t.Errorf("first run: %+v", c)
	}
	for _, want := range []string{"30 of 30 users in their rooms", "3 planned: 2 clean, 1 abrupt", "0 / 0 (members with loss: 0)", "resumed latency"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	t.Run("rerun", func(t *testing.T) {
		rep, out := runBench(t, append(args, "--user-prefix", "t1-")...)
		checkChatRun(t, rep, 30, out)
		if c := rep.Chat; c.Registered != 0 || c.LoggedIn != 30 {
			t.Errorf("rerun: %d registered, %d logged in; want all 30 logged in", c.Registered, c.LoggedIn)
		}
	})

	t.Run("procs", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "chat.json")
		out := runShoal(t, exe, append([]string{"bench"}, append(args, "--user-prefix", "t2-", "--procs", "2", "--json", path)...)...)
		rep := readReportFile(t, path)
		if rep.Procs != 2 {
			t.Fatalf("procs %d", rep.Procs)
		}
		// Members in each process get the says of both.
		checkChatRun(t, rep, 30, out)
	})

	t.Run("history too short", func(t *testing.T) {
		short := startShoalChat(t, exe, "SHOAL_SERVICE_CHAT_HISTORY=2")
		var out, errOut strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// Each of the 2 rooms gets 25 messages while a user is away:
		// more than the 2 kept.
		rep, err := Main(ctx, Config{Args: []string{"chat", "--url", short.URL + "/ws/chat", "--users", "20", "--rooms", "2",
			"--msg-rate", "50", "--duration", "3s", "--reconnect", "0.1", "--reconnect-pause", "1s", "--drain", "2s"}, Stdout: &out, Stderr: &errOut})
		if !errors.Is(err, ErrDelivery) || rep == nil || rep.Messages.Lost == 0 || !strings.Contains(err.Error(), "lost") {
			t.Fatalf("err %v, report %+v\n%s", err, rep, out.String())
		}
		if rep.Chat.Resumed == 0 || rep.Messages.MembersWithLoss == 0 {
			t.Errorf("resumed %d, members with loss %d", rep.Chat.Resumed, rep.Messages.MembersWithLoss)
		}
	})
}

// The drain of a run in one process ends once every say is answered and
// every member showed the last message said in each of its rooms; a
// user given up on holds nothing back.
func TestChatAllDelivered(t *testing.T) {
	s := &chatScenario{rooms: 1, prefix: "x-"}
	r := newChatRun(s, &Env{Opts: &Options{Conns: 2}}, planChatRooms(2, 1, 1, 0, 1))
	a, b := &r.users[0], &r.users[1]
	for i := range r.users {
		if n := len(r.users[i].members); n != 1 {
			t.Fatalf("user %d in %d rooms", i, n)
		}
	}
	for _, u := range []*chatUser{a, b} {
		u.members[0].started, u.members[0].state = true, memberIn
		u.members[0].chain.begin(0, nil, 1)
	}
	a.pending[0] = chatPending{room: 0}
	if r.allDelivered() {
		t.Fatal("a say awaits its sent")
	}
	// Its sent came: seq 10, which b has shown and a not yet.
	delete(a.pending, 0)
	r.sent[0] = append(r.sent[0], 10)
	b.members[0].chain.arrive(live(10, 0, 1), func(chatArrival, int64) {})
	if r.allDelivered() {
		t.Fatal("a has not shown 10")
	}
	a.members[0].chain.arrive(live(10, 0, 1), func(chatArrival, int64) {})
	if !r.allDelivered() {
		t.Fatal("all shown, yet not delivered")
	}
	b.members[0].state = memberIdle
	if r.allDelivered() {
		t.Fatal("b is away")
	}
	b.gone = true
	if !r.allDelivered() {
		t.Fatal("b was given up on")
	}
}
