package bench

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/bench/client"
)

// A user's session on its current connection.
const (
	stageNone     uint8 = iota // nothing sent yet
	stageRegister              // register sent
	stageLogin                 // login sent
	stageIn                    // welcome received, or a token connection: requests may go
)

// A member's state on its user's current connection.
const (
	memberIdle    uint8 = iota // not joined on this connection
	memberJoining              // join sent, joined not yet received
	memberIn                   // joined
)

// How a user comes back after a drop: after --reconnect-pause the first
// time, then after a growing backoff while dials fail, at most this many
// times in a row.
const (
	chatMaxRedials = 10
	chatRedialMax  = 5 * time.Second
	chatRetryAfter = time.Second // a rate-limited or unavailable request
	chatWaitForGap = time.Second // PROTOCOL.md rule 4
	chatLoopTick   = 20 * time.Millisecond
)

// chatUser is one user held by this process. mu guards everything; the
// handlers of its connections, the pacer and the loop take it, and none
// calls into the engine's Close while holding it (Close may run the
// handler at once).
type chatUser struct {
	mu     sync.Mutex
	local  int // index in this process: the connections' Index
	global int
	name   string
	token  string

	conn     *client.Conn // the current connection; nil while away
	dialing  bool         // a redial is being dialed: its connection is adopted
	gen      uint32       // counts connections, from 1
	stage    uint8
	welcomed bool  // a welcome came once: the account exists
	online   bool  // in every room on the current connection
	setUp    bool  // was in every room once
	awayAt   int64 // when the last drop was noticed; 0: not away
	dialedAt int64 // when the current redial was dialed
	redialAt int64 // when to dial again; 0: no redial due
	redials  int   // failed redials in a row
	authAt   int64 // when to send the session request again; 0: none due
	gone     bool  // given up on: refused, or too many failed redials

	members []chatMember
	pending map[uint64]chatPending // says awaiting sent, by id
	said    uint64
}

// chatPending is a say awaiting its sent.
type chatPending struct {
	room int
	due  int64
}

// chatMember is one user's membership of one room.
type chatMember struct {
	room    int
	chain   chatChain
	epoch   string
	started bool // the chain began (first joined)
	state   uint8
	after   uint64        // the after of the resume join in flight
	buf     []chatArrival // live copies before joined
	histIn  bool          // a history request is in flight
	histAt  uint64        // its after
	retryAt int64         // join again at; 0: none due
}

func (r *chatRun) user(c WireConn) *chatUser { return &r.users[c.Index()] }

// adopt makes c the user's connection if it is the redial being dialed
// (dialed since the redial began: not a late event of a connection the
// user left); it reports whether c is the user's connection.
func (u *chatUser) adopt(c *client.Conn) bool {
	if u.conn == nil && u.dialing && c != nil && c.Started() >= u.dialedAt {
		u.conn, u.dialing = c, false
	}
	return u.conn == c && c != nil
}

func (u *chatUser) member(room int) *chatMember {
	for i := range u.members {
		if u.members[i].room == room {
			return &u.members[i]
		}
	}
	return nil
}

// away marks the user off its connection: out of every room, nothing in
// flight.
func (r *chatRun) away(u *chatUser, now int64) {
	u.conn = nil
	if u.online {
		u.online = false
		r.env.Stats.Ready.Add(-1)
	}
	for i := range u.members {
		m := &u.members[i]
		m.state, m.buf, m.histIn, m.retryAt = memberIdle, nil, false, 0
	}
	u.authAt = 0
	if u.awayAt == 0 {
		u.awayAt = now
	}
}

// attention hands u to the loop.
func (r *chatRun) attention(u *chatUser) {
	r.attnMu.Lock()
	r.attn[u] = struct{}{}
	r.attnMu.Unlock()
}

// The session, as a Codec: the ramp runs it on the first connections,
// chatRedial on redials that lost their token.

// Start sends register: a rerun finds the name taken and logs in.
func (r *chatRun) Start(wc WireConn) (bool, error) {
	c := wc.(*client.Conn)
	u := r.user(c)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.conn = c
	u.gen++
	return false, r.session(u)
}

// session sends register, or login once the account is known to exist.
func (r *chatRun) session(u *chatUser) error {
	kind := "register"
	u.stage = stageRegister
	if u.welcomed {
		kind, u.stage = "login", stageLogin
	}
	return u.conn.Send(ws.OpText, chatSessionRequest(kind, u.name, chatPassword(u.name)))
}

// chatPassword is the password of a bench user: derived from its name, so
// that a rerun logs in.
func chatPassword(user string) string { return user + "-shoal-bench" }

// Join sends a first join of room.
func (r *chatRun) Join(c WireConn, room string) error {
	u := r.user(c)
	for i := range u.members {
		if r.roomNames[u.members[i].room] == room {
			return c.Send(ws.OpText, chatJoinRequest(room, i, false, 0, ""))
		}
	}
	return ErrUsage
}

// Publish says the bench message p in room: its header as the text
// (appendChatText), padded to len(p), with the message's Seq as the id.
func (r *chatRun) Publish(c WireConn, room string, p []byte) error {
	pl, ok := ParsePayload(p)
	if !ok {
		return ErrUsage
	}
	return c.Send(ws.OpText, appendChatSay(make([]byte, 0, len(p)+64), room, pl, len(p), pl.Seq))
}

// Decode runs the session until welcome, and passes everything after it
// on as EventData.
func (r *chatRun) Decode(wc WireConn, op ws.OpCode, p []byte, now int64, sink EventSink) {
	c := wc.(*client.Conn)
	u := r.user(c)
	u.mu.Lock()
	if !u.adopt(c) {
		u.mu.Unlock()
		return
	}
	if u.stage == stageIn {
		u.mu.Unlock()
		sink.Event(c, Event{Kind: EventData, Data: p}, now)
		return
	}
	if op != ws.OpText || bytes.HasPrefix(p, chatPresenceStart) {
		u.mu.Unlock()
		return
	}
	f, ok := decodeChat(p)
	switch {
	case ok && f.Type == "welcome":
		if u.stage == stageRegister {
			r.registered.Add(1)
		} else {
			r.loggedIn.Add(1)
		}
		u.token, u.stage, u.welcomed = f.Token, stageIn, true
		u.mu.Unlock()
		sink.Event(c, Event{Kind: EventReady}, now)
	case ok && f.Type == "error" && f.Code == "user_taken" && u.stage == stageRegister:
		u.welcomed = true
		err := r.session(u)
		u.mu.Unlock()
		if err != nil {
			sink.Event(c, Event{Kind: EventRefused, Cause: "login: " + sendCause(err)}, now)
		}
	case ok && f.Type == "error" && (f.Code == "rate_limited" || f.Code == "unavailable"):
		// 1 attempt per second per connection (burst 5): come back once
		// the bucket has refilled.
		u.authAt = now + int64(chatRetryAfter)
		r.attention(u)
		u.mu.Unlock()
	case ok && f.Type == "error":
		kind := "register"
		if u.stage == stageLogin {
			kind = "login"
		}
		u.gone = true
		u.mu.Unlock()
		sink.Event(c, Event{Kind: EventRefused, Cause: kind + ": " + f.Code}, now)
	default:
		u.mu.Unlock()
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "before welcome: " + quoteClip(p)}, now)
	}
}

// The chat itself, as the ConnHandler of the ramp's connections and the
// handler behind chatRedial.

// Open joins every room: the first time plainly, then resuming each after
// the last message shown.
func (r *chatRun) Open(c *client.Conn) {
	u := r.user(c)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.adopt(c) {
		r.joinAll(u)
	}
}

func (r *chatRun) joinAll(u *chatUser) {
	for i := range u.members {
		if u.members[i].state == memberIdle {
			r.join(u, i)
		}
	}
}

func (r *chatRun) join(u *chatUser, i int) {
	m := &u.members[i]
	m.state, m.retryAt = memberJoining, 0
	var err error
	if m.started {
		m.after = m.chain.Last
		err = u.conn.Send(ws.OpText, chatJoinRequest(r.roomNames[m.room], i, true, m.after, m.epoch))
	} else {
		err = r.Join(u.conn, r.roomNames[m.room])
	}
	if err != nil && !errors.Is(err, client.ErrClosed) {
		m.state, m.retryAt = memberIdle, time.Now().UnixNano()+int64(chatRetryAfter)
		r.attention(u)
	}
}

// redialOpen starts a redial's connection: with a token it is the user's
// at once, without one it logs in first.
func (r *chatRun) redialOpen(c *client.Conn) {
	u := r.user(c)
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.adopt(c) {
		// The redial lost a race with the end of the run.
		return
	}
	if u.stage == stageIn {
		r.joinAll(u)
		return
	}
	_ = r.session(u)
}

func (r *chatRun) Event(c *client.Conn, ev Event, now int64) {
	switch ev.Kind {
	case EventData:
		r.data(c, ev.Data, now)
	default:
		r.unexpected(ev.Cause)
	}
}

// data handles one server message of a user in its rooms.
func (r *chatRun) data(c *client.Conn, p []byte, now int64) {
	u := r.user(c)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != c {
		// A connection the bench dropped: a client is done with it.
		return
	}
	if bytes.HasPrefix(p, chatPresenceStart) {
		r.presence.Add(1)
		return
	}
	if m, ok := parseChatMessage(p); ok {
		r.message(u, &m, false, 0, now)
		return
	}
	f, ok := decodeChat(p)
	if !ok {
		r.unexpected("not a chat message: " + quoteClip(p))
		return
	}
	switch f.Type {
	case "message":
		m := chatMsg{room: []byte(f.Room), text: []byte(f.Text), epoch: []byte(f.Epoch), seq: f.Seq, prev: f.Prev}
		r.message(u, &m, false, 0, now)
	case "joined":
		r.joined(u, &f, now)
	case "history":
		r.history(u, &f, now)
	case "sent":
		r.sentReply(u, &f, now)
	case "error":
		r.errorReply(u, &f, now)
	case "welcome":
		// A token connection's greeting, with a fresh token.
		if f.Token != "" {
			u.token = f.Token
		}
	case "presence":
		r.presence.Add(1)
	default:
		r.unexpected("reply " + quoteClip(p))
	}
}

// memberOf finds the member a reply is for, by its id or its room.
func (r *chatRun) memberOf(u *chatUser, f *chatFrame, kind byte) *chatMember {
	if k, n, _, ok := chatID(f.ID); ok && k == kind && n < uint64(len(u.members)) {
		return &u.members[n]
	}
	if room, ok := r.roomIndex[f.Room]; ok {
		return u.member(room)
	}
	return nil
}

// message handles a message of a room, live or (hist) from a reply whose
// request named after.
func (r *chatRun) message(u *chatUser, msg *chatMsg, hist bool, after uint64, now int64) {
	room, ok := r.roomIndex[string(msg.room)]
	var m *chatMember
	if ok {
		m = u.member(room)
	}
	if m == nil {
		r.unexpected("a message of a room not joined: " + string(msg.room))
		return
	}
	if m.started && string(msg.epoch) != m.epoch {
		// The history was made again: old seqs mean nothing. The run's
		// chains cannot be checked across it.
		r.epochChanges.Add(1)
		return
	}
	a := chatArrival{Seq: msg.seq, Prev: msg.prev, Hist: hist, After: after, Gen: u.gen, Now: now}
	if pl, ok := parseChatText(msg.text); ok {
		a.Due = pl.Time
	}
	if !hist && m.state != memberIn {
		// Rule 1: until joined, keep the room's live messages.
		m.buf = append(m.buf, a)
		return
	}
	r.apply(u, m, a)
}

func (r *chatRun) apply(u *chatUser, m *chatMember, a chatArrival) {
	m.chain.arrive(a, func(x chatArrival, now int64) { r.show(m.room, x, now) })
	if m.chain.Waiting() > 0 {
		r.attention(u)
	}
}

// show counts a message a member showed.
func (r *chatRun) show(room int, a chatArrival, now int64) {
	r.env.Stats.Got(now)
	r.shown[room].add(a.Seq)
	if a.Due == 0 {
		return
	}
	if a.Hist {
		r.resumed.Record(now - a.Due)
	} else {
		r.delivery.Record(now - a.Due)
	}
}

// joined handles the answer to a join (rule 2).
func (r *chatRun) joined(u *chatUser, f *chatFrame, now int64) {
	m := r.memberOf(u, f, chatIDJoin)
	if m == nil || m.state != memberJoining {
		r.unexpected("a joined not asked for: " + f.Room)
		return
	}
	switch {
	case !m.started:
		var last uint64
		seqs := make([]uint64, 0, len(f.History))
		for _, it := range f.History {
			seqs = append(seqs, it.Seq)
			last = it.Seq
		}
		m.chain.begin(last, seqs, u.gen)
		m.epoch, m.started = f.Epoch, true
	case f.Epoch != m.epoch:
		r.epochChanges.Add(1)
	default:
		for i := range f.History {
			msg := f.History[i].msg()
			r.message(u, &msg, true, m.after, now)
		}
		if f.More {
			r.fetch(u, m)
		}
	}
	m.state = memberIn
	buf := m.buf
	m.buf = nil
	for _, a := range buf {
		r.apply(u, m, a)
	}
	for i := range u.members {
		if u.members[i].state != memberIn {
			return
		}
	}
	u.online = true
	r.env.Stats.Ready.Add(1)
	if !u.setUp {
		u.setUp = true
		r.setUp.Add(1)
	}
	if u.awayAt != 0 {
		u.awayAt, u.redials = 0, 0
		r.resumedUser.Add(1)
		r.reconnect.Record(now - u.dialedAt)
	}
}

// fetch asks for the messages after the last shown (rule 4, and a join
// whose history had more).
func (r *chatRun) fetch(u *chatUser, m *chatMember) {
	i := m.index(u)
	m.histIn, m.histAt = true, m.chain.Last
	if err := u.conn.Send(ws.OpText, chatHistoryRequest(r.roomNames[m.room], i, m.histAt, m.epoch)); err != nil {
		m.histIn = false
	}
}

func (m *chatMember) index(u *chatUser) int {
	for i := range u.members {
		if &u.members[i] == m {
			return i
		}
	}
	return -1
}

// history handles the answer to a history request.
func (r *chatRun) history(u *chatUser, f *chatFrame, now int64) {
	m := r.memberOf(u, f, chatIDHistory)
	if m == nil || !m.histIn {
		r.unexpected("a history not asked for: " + f.Room)
		return
	}
	m.histIn = false
	if f.Epoch != m.epoch {
		r.epochChanges.Add(1)
		return
	}
	for i := range f.Messages {
		msg := f.Messages[i].msg()
		r.message(u, &msg, true, m.histAt, now)
	}
	if f.More && m.state == memberIn {
		r.fetch(u, m)
	}
}

// sentReply records the seq the server gave a say.
func (r *chatRun) sentReply(u *chatUser, f *chatFrame, now int64) {
	_, id, isSay, ok := chatID(f.ID)
	p, found := u.pending[id]
	if !ok || !isSay || !found {
		r.unexpected("a sent not asked for")
		return
	}
	delete(u.pending, id)
	r.answered.Add(1)
	r.sentLat.Record(now - p.due)
	r.sentMu.Lock()
	r.sent[p.room] = append(r.sent[p.room], f.Seq)
	r.sentMu.Unlock()
}

// errorReply handles an error answer: a say's is counted by code, a
// join is retried, a history request is left to the loop.
func (r *chatRun) errorReply(u *chatUser, f *chatFrame, now int64) {
	kind, id, isSay, ok := chatID(f.ID)
	switch {
	case ok && isSay:
		if _, found := u.pending[id]; found {
			delete(u.pending, id)
			r.sayErrMu.Lock()
			r.sayErrs[f.Code]++
			r.sayErrMu.Unlock()
			return
		}
	case ok && kind == chatIDJoin && id < uint64(len(u.members)):
		m := &u.members[id]
		if m.state == memberJoining {
			m.state, m.retryAt = memberIdle, now+int64(chatRetryAfter)
			r.attention(u)
			r.unexpected("join: " + f.Code)
			return
		}
	case ok && kind == chatIDHistory && id < uint64(len(u.members)):
		u.members[id].histIn = false
		r.unexpected("history: " + f.Code)
		return
	}
	r.unexpected("error " + f.Code + ": " + f.Message)
}

// closed handles the end of a user's connection: unless the run is over
// or the bench dropped it, the user comes back.
func (r *chatRun) closed(c *client.Conn, err error, redial bool) {
	u := r.user(c)
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.adopt(c) {
		return
	}
	now := time.Now().UnixNano()
	r.away(u, now)
	if r.env.Stats.Closing.Load() || u.gone {
		return
	}
	delay := r.s.pause
	switch {
	case c.Opened() == 0 && redial:
		// The redial did not open: try again, after a longer wait.
		cause := client.Cause(err)
		r.env.Stats.Fail("reconnect: " + cause)
		if cause == "handshake status 401" {
			// The token was refused: log in instead (PROTOCOL.md).
			u.token = ""
		}
		u.redials++
		if u.redials > chatMaxRedials {
			u.gone = true
			r.env.Stats.Fail("reconnect: gave up")
			return
		}
		delay = min(chatRedialMax, chatRetryAfter<<min(u.redials, 5))
	case c.Opened() == 0:
		// A first connection that failed is the ramp's to count.
		return
	default:
		r.serverDrops.Add(1)
	}
	u.redialAt = now + int64(delay)
	r.attention(u)
}

func (r *chatRun) Closed(c *client.Conn, err error) { r.closed(c, err, false) }

// say sends message k of the schedule, due at due: from the next user in
// turn that is in its rooms, to the next of its rooms.
func (r *chatRun) say(k uint64, due int64, buf []byte) sayOutcome {
	first := int(k % uint64(r.n))
	for t := range r.n {
		u := &r.users[(first+t)%r.n]
		u.mu.Lock()
		if !u.online {
			u.mu.Unlock()
			continue
		}
		m := &u.members[u.said%uint64(len(u.members))]
		pl := Payload{Time: due, Sender: uint64(u.global), Seq: u.said}
		pl.Put(buf)
		u.pending[pl.Seq] = chatPending{room: m.room, due: due}
		u.said++
		err := r.Publish(u.conn, r.roomNames[m.room], buf)
		if err != nil {
			delete(u.pending, pl.Seq)
		}
		u.mu.Unlock()
		if err != nil {
			return sayFailed
		}
		return saySent
	}
	return saySkipped
}

// sayOutcome is what became of one message of the schedule.
type sayOutcome uint8

const (
	saySent sayOutcome = iota
	sayFailed
	saySkipped
)

// loop does what is due later: the planned drops, redials, a session or
// join to retry, and the history fetch of a member whose message waited
// a second for the gap before it to fill. It runs until ctx is done.
func (r *chatRun) loop(ctx context.Context) {
	next := 0
	var users []*chatUser
	for ctx.Err() == nil {
		r.env.Clock.Sleep(ctx, chatLoopTick)
		now := r.env.Clock.Now()
		if start := r.talkStart.Load(); start != 0 {
			for ; next < len(r.drops) && start+int64(r.drops[next].At) <= now; next++ {
				r.drop(&r.users[r.drops[next].User-r.off], r.drops[next].Abrupt, now)
			}
		}
		r.attnMu.Lock()
		users = users[:0]
		for u := range r.attn {
			users = append(users, u)
		}
		r.attnMu.Unlock()
		for _, u := range users {
			if r.tend(u, now) {
				r.dial(u)
			}
		}
	}
}

// drop ends a user's connection as planned, with a close handshake or
// abruptly, for it to come back after the pause.
func (r *chatRun) drop(u *chatUser, abrupt bool, now int64) {
	u.mu.Lock()
	c := u.conn
	if c == nil || !u.online {
		u.mu.Unlock()
		r.dropsSkipped.Add(1)
		return
	}
	r.away(u, now)
	u.redialAt = now + int64(r.s.pause)
	r.attention(u)
	u.mu.Unlock()
	if abrupt {
		r.abrupt.Add(1)
		c.Abort()
	} else {
		r.clean.Add(1)
		c.Close()
	}
}

// tend does what is due for u and reports whether it is to be dialed
// again; u leaves the loop's care when nothing is left to do.
func (r *chatRun) tend(u *chatUser, now int64) (dial bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	pending := false
	if u.redialAt != 0 {
		if u.conn == nil && !u.dialing && now >= u.redialAt {
			u.redialAt = 0
			dial = true
		} else {
			pending = true
		}
	}
	if u.authAt != 0 {
		if now >= u.authAt && u.conn != nil {
			u.authAt = 0
			_ = r.session(u)
		} else {
			pending = true
		}
	}
	for i := range u.members {
		m := &u.members[i]
		if m.retryAt != 0 {
			if now >= m.retryAt && u.conn != nil && u.stage == stageIn && m.state == memberIdle {
				r.join(u, i)
			} else {
				pending = true
			}
		}
		if m.chain.Waiting() > 0 {
			if m.state == memberIn && !m.histIn && now-m.chain.oldestWait() >= int64(chatWaitForGap) {
				r.fetches.Add(1)
				r.fetch(u, m)
			}
			pending = true
		}
	}
	if !pending && !dial {
		r.attnMu.Lock()
		delete(r.attn, u)
		r.attnMu.Unlock()
	}
	return dial
}

// dial dials u again, with its token when it has one.
func (r *chatRun) dial(u *chatUser) {
	u.mu.Lock()
	if u.conn != nil || u.dialing || u.gone || r.env.Stats.Closing.Load() {
		u.mu.Unlock()
		return
	}
	query := ""
	if u.token != "" {
		query = "token=" + url.QueryEscape(u.token)
		u.stage = stageIn
	} else {
		u.stage = stageNone
	}
	u.gen++
	u.dialing = true
	u.dialedAt = time.Now().UnixNano()
	u.mu.Unlock()
	c, err := r.env.Engine.DialQuery(r.redial, u.local, query)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		u.dialing = false
		if errors.Is(err, client.ErrClosed) {
			return
		}
		r.env.Stats.Fail("reconnect: " + client.Cause(err))
		u.redials++
		if u.redials > chatMaxRedials {
			u.gone = true
			return
		}
		u.redialAt = time.Now().UnixNano() + int64(min(chatRedialMax, chatRetryAfter<<min(u.redials, 5)))
		r.attention(u)
		return
	}
	u.adopt(c)
}
