package shard

import (
	"github.com/nats-io/nats.go"
)

// room is the local membership of one room: the shard holds one NATS
// subscription for it, however many local members it has, and drops the
// subscription with the last member.
type room struct {
	name    string
	sub     *nats.Subscription
	members []*conn
	index   map[*conn]int32
	// confirmed: NATS has acknowledged the subscription (a flush came
	// back), so a join can be answered at once.
	confirmed bool
}

// pendingJoin is a join request waiting for its room's subscription to be
// confirmed.
type pendingJoin struct {
	req  *nats.Msg
	room *room
}

// join adds c to the room, subscribing when it is the first local member.
// It answers the request at once when the subscription is already
// confirmed; otherwise the answer waits for the next flush (see
// confirmJoins), so that what a service publishes after the answer
// reaches the new member. Runs on the dispatcher goroutine.
func (s *Shard) join(c *conn, name string, req *nats.Msg) {
	s.roomsMu.Lock()
	if c.isDead() {
		s.roomsMu.Unlock()
		s.reply(req, errNoConn)
		return
	}
	r := s.rooms[name]
	if r == nil {
		sub, err := s.nc.ChanSubscribe(s.subj.Room(name), s.inbox)
		if err != nil {
			s.roomsMu.Unlock()
			s.stats.busErrors.Add(1)
			s.reply(req, errBus)
			return
		}
		r = &room{name: name, sub: sub, index: make(map[*conn]int32)}
		s.rooms[name] = r
		s.roomsBySub[sub] = r
	}
	if _, ok := r.index[c]; !ok {
		r.index[c] = int32(len(r.members))
		r.members = append(r.members, c)
		c.rooms = append(c.rooms, r)
	}
	confirmed := r.confirmed
	s.roomsMu.Unlock()
	if confirmed {
		s.reply(req, nil)
		return
	}
	s.pendingJoins = append(s.pendingJoins, pendingJoin{req: req, room: r})
}

// confirmJoins flushes the NATS connection once for every join waiting and
// answers them. The dispatcher calls it when its inbox is empty, so a burst
// of joins costs one round trip to the server, not one each.
func (s *Shard) confirmJoins() {
	err := s.nc.FlushTimeout(s.cfg.HandshakeTimeout)
	if err != nil {
		s.stats.busErrors.Add(1)
		err = errBus
	}
	s.roomsMu.Lock()
	if err == nil {
		for _, p := range s.pendingJoins {
			p.room.confirmed = true
		}
	}
	s.roomsMu.Unlock()
	for i, p := range s.pendingJoins {
		s.reply(p.req, err)
		s.pendingJoins[i] = pendingJoin{}
	}
	s.pendingJoins = s.pendingJoins[:0]
}

// leave removes c from the room; the last member out ends the subscription.
func (s *Shard) leave(c *conn, name string) {
	s.roomsMu.Lock()
	defer s.roomsMu.Unlock()
	r := s.rooms[name]
	if r == nil {
		return
	}
	if !s.removeMemberLocked(r, c) {
		return
	}
	for i, x := range c.rooms {
		if x == r {
			last := len(c.rooms) - 1
			c.rooms[i] = c.rooms[last]
			c.rooms[last] = nil
			c.rooms = c.rooms[:last]
			break
		}
	}
	if len(c.rooms) == 0 {
		c.rooms = nil
	}
}

// leaveAll takes a closing connection out of every room.
func (s *Shard) leaveAll(c *conn) {
	s.roomsMu.Lock()
	defer s.roomsMu.Unlock()
	for _, r := range c.rooms {
		s.removeMemberLocked(r, c)
	}
	c.rooms = nil
}

// removeMemberLocked swaps c out of r's member list in constant time.
func (s *Shard) removeMemberLocked(r *room, c *conn) bool {
	i, ok := r.index[c]
	if !ok {
		return false
	}
	last := len(r.members) - 1
	moved := r.members[last]
	r.members[i] = moved
	r.index[moved] = i
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.index, c)
	if len(r.members) == 0 {
		_ = r.sub.Unsubscribe()
		delete(s.rooms, r.name)
		delete(s.roomsBySub, r.sub)
	}
	return true
}

// fanout delivers a room message to every local member: the frame is built
// once (once per variant, see frames) and the same bytes are written to
// each.
func (s *Shard) fanout(m *nats.Msg) {
	s.roomsMu.RLock()
	defer s.roomsMu.RUnlock()
	r := s.roomsBySub[m.Sub]
	if r == nil || len(r.members) == 0 {
		return
	}
	f := framesOf(m)
	for _, c := range r.members {
		s.deliver(c, f.forConn(c))
	}
	s.countCork()
	s.stats.messagesOut.Add(uint64(len(r.members)))
}

// broadcast delivers a message to every connection of the shard.
func (s *Shard) broadcast(m *nats.Msg) {
	f := framesOf(m)
	s.connsMu.RLock()
	defer s.connsMu.RUnlock()
	for _, c := range s.conns {
		s.deliver(c, f.forConn(c))
	}
	s.countCork()
	s.stats.messagesOut.Add(uint64(len(s.conns)))
}

// Rooms is the number of rooms with local members.
func (s *Shard) Rooms() int {
	s.roomsMu.RLock()
	defer s.roomsMu.RUnlock()
	return len(s.rooms)
}
