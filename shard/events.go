package shard

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// Errors answered to services in the Shoal-Error header.
var (
	errNoConn     = errors.New(bus.ErrTextNoConn)
	errBadRoom    = errors.New(bus.ErrTextInvalidRoom)
	errBadCommand = errors.New(bus.ErrTextBadCommand)
	errBadCode    = errors.New(bus.ErrTextBadCode)
	errBus        = errors.New(bus.ErrTextBusDown)
)

func closeFd(fd int) { _ = unix.Close(fd) }

func wsCode(code int) ws.StatusCode { return ws.StatusCode(code) }

func (c *conn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateDead
}

// dispatch is the one goroutine that applies what the bus delivers, in the
// order NATS delivered it.
func (s *Shard) dispatch() {
	defer s.wg.Done()
	for {
		select {
		case m := <-s.inbox:
			s.apply(m)
		case <-s.stop:
			s.uncork()
			if len(s.pendingJoins) > 0 {
				s.confirmJoins()
			}
			return
		}
	}
}

// awaitInbox holds a reader while the dispatcher is behind (see inboxHigh).
// It blocks a pool goroutine, which is the point: with every reader held,
// the pool's queue fills and the poller stops too, while the dispatcher,
// which needs neither, drains the inbox.
func (s *Shard) awaitInbox() {
	if len(s.inbox) < inboxHigh {
		return
	}
	s.stats.readStalls.Add(1)
	for len(s.inbox) >= inboxLow {
		select {
		case <-s.stop:
			return
		default:
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// apply handles one bus message on the dispatcher goroutine, then writes
// the batch out and answers the joins waiting when nothing else waits.
func (s *Shard) apply(m *nats.Msg) {
	s.cork = len(s.inbox) > 0
	if s.cork && len(s.corked) == 0 {
		s.corkStart = time.Now()
	}
	s.handle(m)
	if len(s.corked) > 0 && (len(s.inbox) == 0 || s.corkMsgs >= corkMaxMsgs || time.Since(s.corkStart) >= corkMaxDelay) {
		s.uncork()
	}
	if len(s.pendingJoins) > 0 && len(s.inbox) == 0 {
		s.confirmJoins()
	}
}

func (s *Shard) handle(m *nats.Msg) {
	switch m.Sub {
	case s.cmdSub:
		s.command(m)
	case s.allSub:
		s.broadcast(m)
	default:
		s.fanout(m)
	}
}

// command applies one command of the bus contract to a connection.
func (s *Shard) command(m *nats.Msg) {
	if m.Header == nil {
		s.compactSend(m)
		return
	}
	c := s.lookup(bus.ConnIn(header(m, bus.HeaderConn), s.cfg.ID))
	if c == nil {
		s.stats.unknownConn.Add(1)
		s.reply(m, errNoConn)
		return
	}
	switch header(m, bus.HeaderCmd) {
	case bus.CmdSend:
		f := framesOf(m)
		c.write(f.forConn(c))
		s.stats.messagesOut.Add(1)
		s.reply(m, nil)
	case bus.CmdJoin:
		name := header(m, bus.HeaderRoom)
		if bus.ValidRoom(name) != nil {
			s.reply(m, errBadRoom)
			return
		}
		s.join(c, name, m)
	case bus.CmdLeave:
		name := header(m, bus.HeaderRoom)
		if bus.ValidRoom(name) != nil {
			s.reply(m, errBadRoom)
			return
		}
		s.leave(c, name)
		s.reply(m, nil)
	case bus.CmdIdentify:
		c.mu.Lock()
		c.user = header(m, bus.HeaderUser)
		c.mu.Unlock()
		s.reply(m, nil)
	case bus.CmdClose:
		code := 1000
		if v := header(m, bus.HeaderCloseCode); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || !wire.ValidCloseCode(ws.StatusCode(n)) {
				s.reply(m, errBadCode)
				return
			}
			code = n
		}
		// A close frame's reason must be UTF-8: a service's mistake must
		// not make the client fail the connection over our frame.
		c.goAway(code, strings.ToValidUTF8(header(m, bus.HeaderCloseReason), "\uFFFD"))
		s.reply(m, nil)
	default:
		s.reply(m, errBadCommand)
	}
}

// compactSend applies a send command in the compact form (see bus.Compact).
func (s *Shard) compactSend(m *nats.Msg) {
	cm, err := bus.ParseCompact(m.Data)
	if err != nil || cm.Kind != bus.CompactSend {
		s.reply(m, errBadCommand)
		return
	}
	c := s.lookup(bus.ConnIn(cm.Conn, s.cfg.ID))
	if c == nil {
		s.stats.unknownConn.Add(1)
		s.reply(m, errNoConn)
		return
	}
	if !c.route.compact.Load() {
		c.route.compact.Store(true)
	}
	f := frames{data: cm.Data, op: ws.OpText}
	if cm.Binary {
		f.op = ws.OpBinary
	}
	c.write(f.forConn(c))
	s.stats.messagesOut.Add(1)
	s.reply(m, nil)
}

// lookup finds a connection of this shard by the number bus.ConnIn found
// in its bus id; ok false (no id of this shard) finds none.
func (s *Shard) lookup(id uint64, ok bool) *conn {
	if !ok {
		return nil
	}
	s.connsMu.RLock()
	defer s.connsMu.RUnlock()
	return s.conns[id]
}

func header(m *nats.Msg, key string) string {
	if v := m.Header[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// reply answers a command that asked for an answer.
func (s *Shard) reply(req *nats.Msg, err error) {
	if req.Reply == "" {
		return
	}
	msg := &nats.Msg{Subject: req.Reply}
	if err != nil {
		msg.Header = nats.Header{bus.HeaderError: []string{err.Error()}}
	}
	if e := s.nc.PublishMsg(msg); e != nil {
		s.stats.busErrors.Add(1)
	}
}

// Shared, never modified header values.
var (
	eventOpen    = []string{bus.EventOpen}
	eventMessage = []string{bus.EventMessage}
	eventClose   = []string{bus.EventClose}
	eventDropped = []string{bus.EventDropped}
	opcodeBinary = []string{bus.OpcodeBinary}
)

// event borrows a message from the pool. nats.go encodes the headers
// during Publish and keeps nothing, so the header map and its Shoal-Conn
// value are reused: a message event allocates nothing for its headers.
func (s *Shard) event(subject string, kind []string, cid, user string) *nats.Msg {
	m := s.msgs.Get().(*nats.Msg)
	h := m.Header
	for k := range h {
		if k != bus.HeaderConn {
			delete(h, k)
		}
	}
	m.Subject = subject
	h[bus.HeaderEvent] = kind
	if v := h[bus.HeaderConn]; len(v) == 1 {
		v[0] = cid
	} else {
		h[bus.HeaderConn] = []string{cid}
	}
	if user != "" {
		h[bus.HeaderUser] = []string{user}
	}
	return m
}

func (s *Shard) publish(m *nats.Msg) error {
	err := s.nc.PublishMsg(m)
	m.Data = nil
	s.msgs.Put(m)
	return err
}

func (s *Shard) publishOpen(c *conn, uri string) error {
	m := s.event(c.route.subject, eventOpen, c.cid, c.user)
	m.Header[bus.HeaderRemote] = []string{c.remote.String()}
	m.Header[bus.HeaderPath] = []string{uri}
	return s.publish(m)
}

// publishMessage publishes a message event, in the compact form once the
// connection's service showed it reads that form, else with headers.
func (s *Shard) publishMessage(c *conn, user string, op ws.OpCode, p []byte) error {
	if c.route.compact.Load() && len(user) <= bus.MaxCompactUser {
		return bus.PublishCompactMessage(s.nc, c.route.subject, c.cid, user, op == ws.OpBinary, p)
	}
	m := s.event(c.route.subject, eventMessage, c.cid, user)
	if op == ws.OpBinary {
		m.Header[bus.HeaderOpcode] = opcodeBinary
	}
	m.Data = p
	return s.publish(m)
}

func (s *Shard) publishClose(c *conn, user string, code uint16, reason string) error {
	m := s.event(c.route.subject, eventClose, c.cid, user)
	m.Header[bus.HeaderCloseCode] = []string{strconv.Itoa(int(code))}
	if reason != "" {
		m.Header[bus.HeaderCloseReason] = []string{reason}
	}
	return s.publish(m)
}

// heartbeat publishes the shard's life record every interval.
func (s *Shard) heartbeat() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.publishLife(bus.LifeHeartbeat)
		}
	}
}

func (s *Shard) publishLife(state string) {
	rec := bus.Life{
		Shard:      s.cfg.ID,
		PID:        os.Getpid(),
		State:      state,
		Time:       time.Now(),
		IntervalMS: s.cfg.HeartbeatInterval.Milliseconds(),
		Addr:       s.Addr().String(),
		Compact:    true,
		Stats:      s.Stats(),
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return
	}
	if err := s.nc.Publish(s.subj.Life(s.cfg.ID), data); err != nil {
		s.stats.busErrors.Add(1)
	}
}
