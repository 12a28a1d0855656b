package bench

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/bench/client"
)

// chatScenario runs the bundled chat (service/chat/PROTOCOL.md) the way
// its users would: each registers (or logs in, on a rerun), joins rooms
// of a Zipf size distribution, and talks; some drop their connection and
// come back with their token, resuming each room after the last message
// they showed. Every member checks its rooms' chains (chatChain), and the
// says the server confirmed are checked against what every member showed
// (finishChat).
type chatScenario struct {
	rooms        int
	roomsPerUser int
	zipf         float64
	seed         uint64
	prefix       string
	msgRate      float64
	size         int
	duration     time.Duration
	reconnect    float64
	pause        time.Duration
	setupTimeout time.Duration
	drain        drainFlags
}

func (*chatScenario) Name() string { return chatName }

func (*chatScenario) Path() string    { return "/ws/chat" }
func (*chatScenario) Units() string   { return "deliveries" }
func (*chatScenario) Latency() string { return "delivery" }

func (*chatScenario) Summary() string {
	return "--users chat users register, join --rooms of Zipf sizes and say --msg-rate messages per second in all; some reconnect and resume; every delivery checked"
}

func (s *chatScenario) Flags(fs *flag.FlagSet) {
	fs.Var(aliasFlag{fs, "conns"}, "users", "chat users, one connection each: the same as --conns")
	fs.IntVar(&s.rooms, "rooms", 20, "rooms")
	fs.IntVar(&s.roomsPerUser, "rooms-per-user", 3, "rooms each user joins (at most --rooms), drawn by --zipf")
	fs.Float64Var(&s.zipf, "zipf", 1, "skew of the room sizes: room r (from 0) is drawn with weight 1/(r+1)^zipf; 0 draws evenly")
	fs.Uint64Var(&s.seed, "seed", 1, "seed of the room draws: the same flags give the same rooms")
	fs.StringVar(&s.prefix, "user-prefix", "bench-", "first part of every user and room name (user <prefix>u<i>, room <prefix>r<k>): a rerun with the same prefix logs the users in again, another prefix keeps runs apart")
	fs.Float64Var(&s.msgRate, "msg-rate", 100, "messages said per second, all users together (users take turns, each in its rooms in turn)")
	fs.IntVar(&s.size, "size", 64, "message text size in bytes (at least 24; the bench's header is about 40)")
	fs.DurationVar(&s.duration, "duration", 10*time.Second, "how long to talk")
	fs.Float64Var(&s.reconnect, "reconnect", 0.05, "fraction of the users that drop their connection while talk goes on (every other one abruptly, by a reset) and come back with their token, resuming every room")
	fs.DurationVar(&s.pause, "reconnect-pause", 500*time.Millisecond, "how long a dropped user stays away before it reconnects")
	fs.DurationVar(&s.setupTimeout, "setup-timeout", 5*time.Minute, "how long to wait for every user to be logged in and in its rooms")
	s.drain.register(fs, "deliveries")
}

// aliasFlag is another name of the flag called name in fs.
type aliasFlag struct {
	fs   *flag.FlagSet
	name string
}

func (a aliasFlag) String() string {
	if a.fs == nil {
		// The flag package's zero value, for its usage text.
		return ""
	}
	return a.fs.Lookup(a.name).Value.String()
}

func (a aliasFlag) Set(v string) error { return a.fs.Set(a.name, v) }

// chatServerEnv are the chat service's settings that compare and sweep
// start shoal with for the chat, and that a bench of many users wants
// (docs/bench.md): bcrypt at its lowest cost, so that setting up
// thousands of users takes seconds of the server's CPU rather than
// minutes, and a history long enough that a user back from a reconnect
// finds every message it missed.
var chatServerEnv = []string{"SHOAL_SERVICE_CHAT_BCRYPT_COST=4", "SHOAL_SERVICE_CHAT_HISTORY=1000"}

// shoalFor is how compare and sweep start shoal for the scenario called
// name: the chat service for the chat, the bench protocol's services for
// the others.
func shoalFor(name string, workers int) ShoalConfig {
	if name == chatName {
		return ShoalConfig{Workers: workers, Services: "chat", Env: chatServerEnv}
	}
	return ShoalConfig{Workers: workers}
}

// chatName is the chat scenario's name; only shoal serves it.
const chatName = "chat"

// chatMaxSize bounds --size: the chat's default --max-text.
const chatMaxSize = 4096

// check validates the scenario's flags against users.
func (s *chatScenario) check(users int) error {
	switch {
	case s.rooms <= 0:
		return fmt.Errorf("%w: --rooms must be positive", ErrUsage)
	case s.roomsPerUser <= 0:
		return fmt.Errorf("%w: --rooms-per-user must be positive", ErrUsage)
	case s.zipf < 0:
		return fmt.Errorf("%w: --zipf must not be negative", ErrUsage)
	case s.msgRate <= 0:
		return fmt.Errorf("%w: --msg-rate must be positive", ErrUsage)
	case s.size < PayloadHeader || s.size > chatMaxSize:
		return fmt.Errorf("%w: --size must be between %d and %d", ErrUsage, PayloadHeader, chatMaxSize)
	case s.reconnect < 0 || s.reconnect > 1:
		return fmt.Errorf("%w: --reconnect is a fraction of the users, 0 to 1", ErrUsage)
	case s.pause < 0:
		return fmt.Errorf("%w: --reconnect-pause must not be negative", ErrUsage)
	}
	// Names are 1 to 32 bytes (users) and 64 (rooms) of A-Z a-z 0-9 _ -.
	if !chatNameChars(s.prefix) || len(chatUserName(s.prefix, users-1)) > 32 || len(chatRoomName(s.prefix, s.rooms-1)) > 64 {
		return fmt.Errorf("%w: --user-prefix %q: names are at most 32 bytes of A-Z a-z 0-9 _ -", ErrUsage, s.prefix)
	}
	return nil
}

func chatNameChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (s *chatScenario) Run(ctx context.Context, env *Env) error {
	users := env.Opts.Conns
	if err := s.check(users); err != nil {
		return err
	}
	plan := planChatRooms(users, s.rooms, s.roomsPerUser, s.zipf, s.seed)
	plan.planDrops(int(s.reconnect*float64(users)+0.5), s.duration)
	r := newChatRun(s, env, plan)
	cs := r.stats
	env.Report.Chat = cs

	// The chat speaks its own protocol: the ramp runs its session
	// (register or login) through the chat's codec.
	env.Codec = r
	loopCtx, stopLoop := context.WithCancel(ctx)
	var loop sync.WaitGroup
	loop.Go(func() { r.loop(loopCtx) })
	defer func() {
		stopLoop()
		loop.Wait()
	}()

	setupStart := time.Now()
	env.Ramp(ctx, r.n, env.ShareRate(env.Opts.Rate), r)
	deadline := time.Now().Add(s.setupTimeout)
	for left := r.unsettled(); left > 0 && ctx.Err() == nil; left = r.unsettled() {
		if time.Now().After(deadline) {
			env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("%d users were not in their rooms within --setup-timeout %s", left, s.setupTimeout))
			break
		}
		env.Clock.Sleep(ctx, 50*time.Millisecond)
	}
	cs.SetupSec = time.Since(setupStart).Seconds()
	if err := env.Barrier(ctx, "joined"); err != nil {
		return err
	}
	if err := env.Barrier(ctx, "measure"); err != nil {
		return err
	}

	start := env.Clock.Now() + int64(10*time.Millisecond)
	r.talkStart.Store(start)
	buf := make([]byte, s.size)
	var sendErrs uint64
	p := Pacer{Clock: env.Clock, Schedule: Schedule{Start: start, Rate: env.ShareRate(s.msgRate)}, End: start + int64(s.duration)}
	st := p.Run(ctx, func(k uint64, due, _ int64) {
		switch r.say(k, due, buf) {
		case sayFailed:
			sendErrs++
		case saySkipped:
			cs.Skipped++
		case saySent:
			env.Stats.Sent.Add(1)
		}
	})
	if err := env.Barrier(ctx, "published"); err != nil {
		return err
	}
	// Planned drops come back well before the talk ends; give a late one
	// the time it needs before the drain judges silence.
	waitDrain(ctx, env, s.drain.quiet, s.drain.limit, func() bool { return env.Opts.ChildCount <= 1 && r.allDelivered() })
	stopLoop()
	loop.Wait()
	r.collect()
	env.StopConns()
	r.fill()

	m := &env.Report.Messages
	m.Late, m.MaxLateUs = st.Late, st.MaxLateNs/1000
	m.Sent = env.Stats.Sent.Load()
	m.Received = env.Stats.Received.Load()
	m.Seconds, m.RecvSeconds = s.duration.Seconds(), env.Stats.Window(start, s.duration)
	if sendErrs > 0 {
		env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("%d says could not be sent", sendErrs))
	}
	if b := r.bad.Load(); b > 0 {
		first, _ := r.badCause.Load().(string)
		env.Report.Errors = append(env.Report.Errors, fmt.Sprintf("%d unexpected messages from the server, the first: %s", b, first))
	}
	return nil
}

// chatRun is one bench process's part of a chat run: its users (the
// share of the plan's users this process holds) and the counts of what
// they did.
type chatRun struct {
	s     *chatScenario
	env   *Env
	plan  *chatPlan
	stats *ChatStats

	off, n    int
	roomNames []string
	roomIndex map[string]int
	users     []chatUser
	redial    *chatRedial
	// drops are the plan's drops of this process's users, by time.
	drops []chatDrop

	delivery, resumed, sentLat, reconnect *Recorder

	// shown[r] are the seqs this process's members of room r showed.
	shown []seqSet
	// sent[r] are the seqs of the says to room r that got their sent.
	sentMu sync.Mutex
	sent   [][]uint64

	// attn holds the users the loop has to look after: a redial, a
	// session or join to retry, a message waiting for a gap to fill.
	attnMu sync.Mutex
	attn   map[*chatUser]struct{}

	talkStart atomic.Int64

	setUp, registered, loggedIn                           atomic.Int64
	clean, abrupt, dropsSkipped, serverDrops, resumedUser atomic.Int64
	answered, fetches, epochChanges, presence             atomic.Uint64
	sayErrMu                                              sync.Mutex
	sayErrs                                               map[string]uint64

	bad      atomic.Int64
	badCause atomic.Value
}

func newChatRun(s *chatScenario, env *Env, plan *chatPlan) *chatRun {
	r := &chatRun{s: s, env: env, plan: plan, roomIndex: make(map[string]int, s.rooms), attn: map[*chatUser]struct{}{}, sayErrs: map[string]uint64{}}
	// delivery first: it is the one the progress line shows.
	r.delivery = env.Recorder("delivery")
	r.sentLat = env.Recorder("sent")
	r.resumed = env.Recorder("resumed")
	r.reconnect = env.Recorder("reconnect")
	r.redial = &chatRedial{r: r}
	r.off, r.n = env.Share(plan.users)
	for k := range s.rooms {
		name := chatRoomName(s.prefix, k)
		r.roomNames = append(r.roomNames, name)
		r.roomIndex[name] = k
	}
	r.shown = make([]seqSet, s.rooms)
	r.sent = make([][]uint64, s.rooms)
	r.users = make([]chatUser, r.n)
	for i := range r.users {
		u := &r.users[i]
		u.local, u.global = i, r.off+i
		u.name = chatUserName(s.prefix, u.global)
		u.pending = map[uint64]chatPending{}
		for _, room := range plan.userRooms[u.global] {
			u.members = append(u.members, chatMember{room: int(room)})
		}
	}
	for _, d := range plan.drops {
		if d.User >= r.off && d.User < r.off+r.n {
			r.drops = append(r.drops, d)
		}
	}
	largest, median, smallest, used := plan.sizeSummary()
	memberships := 0
	for _, v := range plan.sizes {
		memberships += v
	}
	r.stats = &ChatStats{
		Users: plan.users, Rooms: s.rooms, RoomsPerUser: min(s.roomsPerUser, s.rooms), Zipf: s.zipf,
		Memberships: memberships, RoomsUsed: used, Largest: largest, Median: median, Smallest: smallest,
		Planned: len(r.drops),
	}
	return r
}

// unexpected counts a server message the scenario did not ask for.
func (r *chatRun) unexpected(cause string) {
	if r.bad.Add(1) == 1 {
		r.badCause.Store(cause)
	}
}

// unsettled counts the users that are neither in their rooms yet nor
// given up on. Once the ramp is over, a user with no connection and no
// redial to come failed for good (the ramp counted it).
func (r *chatRun) unsettled() int {
	n := 0
	for i := range r.users {
		u := &r.users[i]
		u.mu.Lock()
		if !u.setUp && !u.gone && (u.conn != nil || u.dialing || u.redialAt != 0) {
			n++
		}
		u.mu.Unlock()
	}
	return n
}

// allDelivered reports whether every say of this process was answered
// and every member is in its room with every message said there shown:
// the end of the drain of a run in one process. Once talk is over and no
// say awaits its answer, the seqs said are all known; only then are the
// members held to them.
func (r *chatRun) allDelivered() bool {
	for i := range r.users {
		u := &r.users[i]
		u.mu.Lock()
		waiting := len(u.pending) > 0 && !u.gone
		u.mu.Unlock()
		if waiting {
			return false
		}
	}
	r.sentMu.Lock()
	last := make([]uint64, len(r.sent))
	for room, seqs := range r.sent {
		for _, s := range seqs {
			last[room] = max(last[room], s)
		}
	}
	r.sentMu.Unlock()
	for i := range r.users {
		u := &r.users[i]
		u.mu.Lock()
		behind := false
		for j := range u.members {
			m := &u.members[j]
			if !u.gone && m.started && (m.state != memberIn || m.chain.Waiting() > 0 || m.chain.Last < last[m.room]) {
				behind = true
				break
			}
		}
		u.mu.Unlock()
		if behind {
			return false
		}
	}
	return true
}

// collect takes each member's state at the end of the drain: who is in
// its room, and its chain's figures.
func (r *chatRun) collect() {
	part := ChatPart{Shown: make([][]uint64, len(r.shown))}
	groups := map[ChatMembers]int64{}
	cs := r.stats
	var dups uint64
	for i := range r.users {
		u := &r.users[i]
		u.mu.Lock()
		cs.Unanswered += uint64(len(u.pending))
		for j := range u.members {
			m := &u.members[j]
			if !m.started {
				continue
			}
			c := &m.chain
			groups[ChatMembers{Room: m.room, Start: c.Start, Last: c.Last, Shown: c.Shown, Present: m.state == memberIn && u.conn != nil}]++
			dups += c.Dups
			cs.Overlaps += c.Overlaps
			cs.OutOfOrder += c.OutOfOrder
			cs.Reordered += c.Reordered
			cs.Waiting += uint64(c.Waiting())
		}
		u.mu.Unlock()
	}
	for g, n := range groups {
		g.N = n
		part.Members = append(part.Members, g)
		if !g.Present {
			cs.Absent += n
		}
	}
	for room := range r.shown {
		part.Shown[room] = r.shown[room].sorted()
	}
	cs.Parts = []ChatPart{part}
	r.env.Report.Messages.Duplicated = dups
}

// fill puts the counters in the report, once the connections are closed.
func (r *chatRun) fill() {
	cs := r.stats
	cs.SetUp, cs.Registered, cs.LoggedIn = r.setUp.Load(), r.registered.Load(), r.loggedIn.Load()
	cs.Clean, cs.Abrupt, cs.DropsSkipped = r.clean.Load(), r.abrupt.Load(), r.dropsSkipped.Load()
	cs.ServerDrops, cs.Resumed = r.serverDrops.Load(), r.resumedUser.Load()
	cs.Answered, cs.Fetches, cs.EpochChanges, cs.Presence = r.answered.Load(), r.fetches.Load(), r.epochChanges.Load(), r.presence.Load()
	r.sayErrMu.Lock()
	if len(r.sayErrs) > 0 {
		cs.SayErrors = r.sayErrs
	}
	r.sayErrMu.Unlock()
	r.sentMu.Lock()
	cs.Sent = r.sent
	r.sentMu.Unlock()
}

// chatRedial is the client.Handler of the connections a user dials again
// after a drop, and the EventSink of their session (a login, when the
// token was refused).
type chatRedial struct{ r *chatRun }

func (d *chatRedial) Open(c *client.Conn) { d.r.redialOpen(c) }

func (d *chatRedial) Message(c *client.Conn, op ws.OpCode, p []byte, now int64) {
	d.r.Decode(c, op, p, now, d)
}

func (d *chatRedial) Event(wc WireConn, ev Event, now int64) {
	c := wc.(*client.Conn)
	switch ev.Kind {
	case EventReady:
		d.r.Open(c)
	case EventRefused:
		d.r.env.Stats.Fail("reconnect: " + ev.Cause)
		c.Close()
	default:
		d.r.Event(c, ev, now)
	}
}

func (d *chatRedial) Closed(c *client.Conn, err error) { d.r.closed(c, err, true) }
