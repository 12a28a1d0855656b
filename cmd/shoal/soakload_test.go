package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/shoal-gw/shoal/auth"
)

// The load of TestSoak: its kinds of clients, each a loop on a goroutine
// of its own until the load's context ends, and what they saw.

// Limits the soak's gateway runs with; the clients below are shaped by
// them.
const (
	soakMsgRate  = 50 // --max-msg-rate and --max-msg-burst
	soakMaxQueue = "32KiB"
	// soakReply bounds the wait for an answer. While NATS is down no
	// answer comes, and events published then may be lost for good (a
	// service that had not subscribed again yet); a client that waited
	// this long gives up on its connection and starts over.
	soakReply = 10 * time.Second
	// soakRooms is how many rooms the churning chatters spread over.
	soakRooms = 8
	// busyRoom is the room of the writers and the slow readers.
	busyRoom = "busy"
	// soakText is the length of a writer's message: long, so that the
	// slow readers fall behind in seconds (the chat runs with a
	// --max-text above it), and short enough that a page of 100 of them,
	// and a join's history of 50, fit a NATS message.
	soakText = 8000
)

// soakSent is a chat message the service confirmed with sent. Its text
// is kept as a hash: a long soak confirms gigabytes of them.
type soakSent struct {
	room     string
	text     uint64 // textSum of the text
	seq      uint64
	restarts int // NATS restarts begun before the sent arrived
}

// textSum is FNV-1a of a message's text.
func textSum(text string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, text)
	return h.Sum64()
}

// soakLoad runs the clients and counts what they did.
type soakLoad struct {
	base string // ws://host:port
	key  auth.Key

	mu       sync.Mutex
	restarts int
	sent     []soakSent
	odd      []string // the first answers of an unexpected type

	users                             atomic.Int64 // user names made
	dials, halfHandshakes, registered atomic.Int64
	timeouts, unavailable, failed     atomic.Int64
	live                              atomic.Int64 // message events received
	floods, floodClosed               atomic.Int64 // hard floods, and those closed with 1008
	softFloods, told, pongsAfter      atomic.Int64 // soft floods, those told of their drops, and served after
	slowHeld, slowClosed, slowEnded   atomic.Int64 // slow readers, closed with 1008, ended otherwise
}

// record keeps a sent reply with the NATS restarts begun before it came.
func (l *soakLoad) record(room, text string, seq uint64) {
	l.mu.Lock()
	l.sent = append(l.sent, soakSent{room: room, text: textSum(text), seq: seq, restarts: l.restarts})
	l.mu.Unlock()
}

// restarting counts a NATS restart as begun: sent replies from now on
// are not "before the restart".
func (l *soakLoad) restarting() {
	l.mu.Lock()
	l.restarts++
	l.mu.Unlock()
}

// user makes a user name of kind no one had yet.
func (l *soakLoad) user(kind string) string {
	return kind + strconv.FormatInt(l.users.Add(1), 10)
}

func (l *soakLoad) token(user string) string {
	tok, _, err := l.key.Sign(user, []string{"chat"}, time.Hour, time.Now())
	if err != nil {
		panic(err) // a valid key and user name: cannot fail
	}
	return tok
}

// soakFrame is the part of a chat message the load looks at.
type soakFrame struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id"`
	Code string          `json:"code"`
	Room string          `json:"room"`
	Seq  uint64          `json:"seq"`
	More bool            `json:"more"`
	// Messages of a history reply.
	Messages []struct {
		Seq  uint64 `json:"seq"`
		Text string `json:"text"`
	} `json:"messages"`
}

var (
	errSoakTimeout = errors.New("no answer in time")
	errSoakClosed  = errors.New("connection ended")
)

// soakConn is one chat connection whose reader takes every frame as it
// comes, so that it never becomes a slow consumer however busy its room:
// answers go to the call waiting for them, the rest is counted.
type soakConn struct {
	l       *soakLoad
	conn    net.Conn
	wmu     sync.Mutex // the reader answers pings and closes
	mu      sync.Mutex
	ids     int
	waiting map[string]chan soakFrame
	welcome chan struct{}
	notices atomic.Int64 // rate_limited errors without an id
	done    chan struct{}
	// closeCode is the code of the server's close frame, 0 without one;
	// read it after done is closed.
	closeCode int
}

// dial connects to /ws/chat as user (with a token) or anonymously
// (user "").
func (l *soakLoad) dial(ctx context.Context, user string) (*soakConn, error) {
	u := l.base + "/ws/chat"
	if user != "" {
		u += "?token=" + url.QueryEscape(l.token(user))
	}
	ctx, cancel := context.WithTimeout(ctx, soakReply)
	defer cancel()
	conn, br, _, err := ws.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	l.dials.Add(1)
	c := &soakConn{l: l, conn: conn, waiting: make(map[string]chan soakFrame),
		welcome: make(chan struct{}, 1), done: make(chan struct{})}
	var rd io.Reader = conn
	if br != nil {
		rd = io.MultiReader(br, conn)
	}
	go c.read(rd)
	return c, nil
}

func (c *soakConn) read(rd io.Reader) {
	defer close(c.done)
	rw := struct {
		io.Reader
		io.Writer
	}{rd, lockedWriter{&c.wmu, c.conn}}
	for {
		data, _, err := wsutil.ReadServerData(rw)
		if err != nil {
			var ce wsutil.ClosedError
			if errors.As(err, &ce) {
				c.closeCode = int(ce.Code)
			}
			return
		}
		var f soakFrame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		if len(f.ID) > 0 {
			c.mu.Lock()
			ch := c.waiting[string(f.ID)]
			delete(c.waiting, string(f.ID))
			c.mu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		switch f.Type {
		case "welcome":
			select {
			case c.welcome <- struct{}{}:
			default:
			}
		case "message":
			c.l.live.Add(1)
		case "error":
			if f.Code == "rate_limited" {
				c.notices.Add(1)
			}
		}
	}
}

// send writes one request with a fresh id and returns the channel its
// answer comes on.
func (c *soakConn) send(msg map[string]any) (chan soakFrame, error) {
	c.mu.Lock()
	c.ids++
	id := c.ids
	ch := make(chan soakFrame, 1)
	c.waiting[strconv.Itoa(id)] = ch
	c.mu.Unlock()
	msg["id"] = id
	b, _ := json.Marshal(msg)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(soakReply))
	return ch, wsutil.WriteClientText(c.conn, b)
}

// call sends a request and waits for its answer.
func (c *soakConn) call(msg map[string]any) (soakFrame, error) {
	ch, err := c.send(msg)
	if err != nil {
		return soakFrame{}, err
	}
	select {
	case f := <-ch:
		return f, nil
	case <-c.done:
		return soakFrame{}, errSoakClosed
	case <-time.After(soakReply):
		c.l.timeouts.Add(1)
		return soakFrame{}, errSoakTimeout
	}
}

// awaitWelcome waits for the greeting of a token connection.
func (c *soakConn) awaitWelcome() error {
	select {
	case <-c.welcome:
		return nil
	case <-c.done:
		return errSoakClosed
	case <-time.After(soakReply):
		c.l.timeouts.Add(1)
		return errSoakTimeout
	}
}

// say says text in room and records the sent reply.
func (c *soakConn) say(room, text string) error {
	f, err := c.call(map[string]any{"type": "say", "room": room, "text": text})
	if err != nil {
		return err
	}
	return c.l.answer(f, "sent", func() { c.l.record(room, text, f.Seq) })
}

// join joins room.
func (c *soakConn) join(room string) error {
	f, err := c.call(map[string]any{"type": "join", "room": room})
	if err != nil {
		return err
	}
	return c.l.answer(f, "joined", func() {})
}

// answer checks an answer's type: the one wanted runs ok; unavailable
// (the bus or JetStream is down) is counted and ends the cycle, as would
// anything else, which is also counted as a failure.
func (l *soakLoad) answer(f soakFrame, want string, ok func()) error {
	switch {
	case f.Type == want:
		ok()
		return nil
	case f.Type == "error" && f.Code == "unavailable":
		l.unavailable.Add(1)
	default:
		l.failed.Add(1)
		l.mu.Lock()
		if len(l.odd) < 10 {
			l.odd = append(l.odd, fmt.Sprintf("%s %s (%s) for a %s", f.Type, f.Code, f.Room, want))
		}
		l.mu.Unlock()
	}
	return fmt.Errorf("answered %s %s, want %s", f.Type, f.Code, want)
}

// end closes the connection one of three ways, picked by how: a close
// handshake, a socket closed without a close frame, or one reset.
func (c *soakConn) end(how int) {
	switch how % 3 {
	case 0:
		c.wmu.Lock()
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = wsutil.WriteClientMessage(c.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
		c.wmu.Unlock()
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
		}
	case 2:
		if tc, ok := c.conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	c.conn.Close()
	<-c.done
}

// churn is one client after another: most join a room, say a little and
// go; some only connect, some register an account, and some never finish
// their handshake.
func (l *soakLoad) churn(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		user := l.user("churn")
		switch i % 10 {
		case 0:
			l.halfHandshake()
		case 1:
			// Anonymous: asks for something it may not have and goes.
			if c, err := l.dial(ctx, ""); err == nil {
				_, _ = c.call(map[string]any{"type": "ping"})
				c.end(i / 10)
			}
		case 2:
			if c, err := l.dial(ctx, ""); err == nil {
				f, err := c.call(map[string]any{"type": "register", "user": user, "password": "password-" + user})
				if err == nil && l.answer(f, "welcome", func() { l.registered.Add(1) }) == nil {
					l.chat(c, user, i)
				}
				c.end(i / 10)
			}
		default:
			if c, err := l.dial(ctx, user); err == nil {
				if c.awaitWelcome() == nil {
					l.chat(c, user, i)
				}
				c.end(i)
			}
		}
	}
}

// chat joins one of the rooms and says one to three messages there.
func (l *soakLoad) chat(c *soakConn, user string, i int) {
	room := "room" + strconv.Itoa(i%soakRooms)
	if c.join(room) != nil {
		return
	}
	for n := range 1 + i%3 {
		if c.say(room, fmt.Sprintf("%s says %d", user, n)) != nil {
			return
		}
	}
}

// halfHandshake connects and sends part of a request head, then goes.
func (l *soakLoad) halfHandshake() {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(l.base, "ws://"), soakReply)
	if err != nil {
		return
	}
	l.halfHandshakes.Add(1)
	_, _ = io.WriteString(c, "GET /ws/chat HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n")
	c.Close()
}

// write keeps a connection in the busy room and says messages there as
// fast as they are answered and the gateway takes them, for the slow
// readers to fall behind on.
func (l *soakLoad) write(ctx context.Context) {
	pad := strings.Repeat("x", soakText)
	var p pacer
	for i := 0; ctx.Err() == nil; i++ {
		user := l.user("writer")
		c, err := l.dial(ctx, user)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		if c.awaitWelcome() == nil && c.join(busyRoom) == nil {
			for n := 0; ctx.Err() == nil; n++ {
				p.wait(ctx)
				if c.say(busyRoom, fmt.Sprintf("%s %d %s", user, n, pad)) != nil {
					break
				}
			}
		}
		c.end(i)
	}
}

// flood sends far past the gateway's message rate: every other client a
// little past it (its messages dropped, its service told, the connection
// kept), the others far past it (closed with 1008).
func (l *soakLoad) flood(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		c, err := l.dial(ctx, l.user("flood"))
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		if c.awaitWelcome() != nil {
			c.end(i)
			continue
		}
		if i%2 == 0 {
			l.softFloods.Add(1)
			// The burst and 20 more: 20 dropped, fewer than the drops
			// that close a client.
			for range soakMsgRate + 20 {
				if _, err := c.send(map[string]any{"type": "ping"}); err != nil {
					break
				}
			}
			deadline := time.Now().Add(soakReply)
			for c.notices.Load() == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			if c.notices.Load() > 0 {
				l.told.Add(1)
			}
			// Slowed down, it is served again once its bucket refilled.
			sleepCtx(ctx, time.Second)
			if f, err := c.call(map[string]any{"type": "ping"}); err == nil && f.Type == "pong" {
				l.pongsAfter.Add(1)
			}
		} else {
			l.floods.Add(1)
			for range 10 * soakMsgRate {
				if _, err := c.send(map[string]any{"type": "ping"}); err != nil {
					break
				}
			}
			select {
			case <-c.done:
				if c.closeCode == int(ws.StatusPolicyViolation) {
					l.floodClosed.Add(1)
				}
			case <-time.After(soakReply):
			}
		}
		c.end(i)
	}
}

// slowRead joins the busy room and does not read, until the gateway has
// closed its side of the connection (its queue past --max-queue: closed
// with 1008) or maxHold passed; then it reads what reached it, to see how
// it ended. Its socket offers a small window and a small segment size,
// so that the gateway's kernel buffers a few KiB for it, not the MiBs it
// gives a loopback peer (the send buffer grows with the segment size, up
// to net.ipv4.tcp_wmem): the worker's queue fills in a moment (the
// join's history alone is 50 of the writers' messages).
func (l *soakLoad) slowRead(ctx context.Context, maxHold time.Duration) {
	dialer := ws.Dialer{Timeout: soakReply, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			// Before connect, so that the handshake offers them.
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
			})
		}}
		return d.DialContext(ctx, network, addr)
	}}
	for ctx.Err() == nil {
		u := l.base + "/ws/chat?token=" + url.QueryEscape(l.token(l.user("slow")))
		conn, br, _, err := dialer.Dial(ctx, u)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		l.dials.Add(1)
		l.slowHeld.Add(1)
		conn.SetWriteDeadline(time.Now().Add(soakReply))
		_ = wsutil.WriteClientText(conn, []byte(`{"type":"join","room":"`+busyRoom+`"}`))
		addr := conn.LocalAddr().(*net.TCPAddr)
		gateway := conn.RemoteAddr().(*net.TCPAddr).Port
		for held := time.Now(); time.Since(held) < maxHold && gatewayHolds(gateway, addr.Port); {
			time.Sleep(100 * time.Millisecond)
		}
		var rd io.Reader = conn
		if br != nil {
			rd = io.MultiReader(br, conn)
		}
		rw := struct {
			io.Reader
			io.Writer
		}{rd, conn}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		for {
			_, _, err := wsutil.ReadServerData(rw)
			var ce wsutil.ClosedError
			var ne net.Error
			switch {
			case err == nil:
				continue
			case errors.As(err, &ce) && ce.Code == ws.StatusPolicyViolation:
				l.slowClosed.Add(1)
			case errors.As(err, &ne) && ne.Timeout():
				// Still open after maxHold: the room was not busy enough.
			default:
				// The worker gave up on the close handshake, which the
				// full socket held up, and closed: the data it had
				// queued came, then the end.
				l.slowEnded.Add(1)
			}
			break
		}
		conn.Close()
	}
}

// gatewayHolds reports whether the gateway's socket of a client's
// connection (its local port gateway, its peer's port client) is still
// established, not closed by the worker.
func gatewayHolds(gateway, client int) bool {
	socks, err := readTCPSockets()
	if err != nil {
		return false
	}
	for _, s := range socks {
		if s.local == gateway && s.remote == client {
			return s.established
		}
	}
	return false
}

// pacer spaces a client's messages to four fifths of the gateway's
// message rate: a client that keeps to its limit never has a message
// dropped.
type pacer struct{ next time.Time }

func (p *pacer) wait(ctx context.Context) {
	sleepCtx(ctx, time.Until(p.next))
	p.next = time.Now().Add(time.Second * 5 / (4 * soakMsgRate))
}

// lockedWriter writes under a mutex shared with other writers.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (lw lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
