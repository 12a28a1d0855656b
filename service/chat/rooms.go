package chat

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/shoal-gw/shoal/service"
)

// roomRecord is the value of room.<name> in the rooms bucket.
type roomRecord struct {
	Created string `json:"created"`
}

func checkRoom(room string) error {
	if !validName(room, MaxRoom) {
		return failure(CodeBadRequest, "room: 1 to 64 of A-Z a-z 0-9 _ -")
	}
	return nil
}

// roomExists reports whether room was ever joined. The mirror knows
// almost always; a room created a moment ago by another instance may not
// have reached it yet, so a miss asks the bucket.
func (h *Handler) roomExists(ctx context.Context, room string) (bool, error) {
	if h.mirror.roomKnown(room) {
		return true, nil
	}
	_, err := h.rooms.Get(ctx, roomKey(room))
	if errors.Is(err, service.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// needRoom fails with no_such_room unless room exists.
func (h *Handler) needRoom(ctx context.Context, room string) error {
	if err := checkRoom(room); err != nil {
		return err
	}
	ok, err := h.roomExists(ctx, room)
	if err == nil && !ok {
		return failure(CodeNoSuchRoom, "no room "+room)
	}
	return err
}

// join adds the connection to a room (creating the room), answers with
// the members and history, and tells the room when the user is new there.
func (h *Handler) join(ctx context.Context, c *service.Conn, req *request) error {
	room, user, id := req.Room, c.User(), c.ID()
	if err := checkRoom(room); err != nil {
		return err
	}
	limit, err := historyLimit(req.Limit, req.After != nil)
	if err != nil {
		return err
	}
	if ok, err := h.roomExists(ctx, room); err != nil {
		return err
	} else if !ok {
		b, _ := json.Marshal(roomRecord{Created: time.Now().UTC().Format(time.RFC3339)})
		if _, err := h.rooms.Create(ctx, roomKey(room), b); err != nil && !errors.Is(err, service.ErrKeyExists) {
			return err
		}
	}
	// Storage first, shard last: see presence.go for why that order makes
	// a join racing the connection's close safe. A failure takes back
	// what this join added, and only that: a join of a room the
	// connection is in already must not take it out.
	addedConn, err := h.addConnRoom(ctx, id, user, room)
	if err != nil {
		return err
	}
	add, err := h.addMember(ctx, room, user, id)
	if err != nil {
		h.undoJoin(id, user, room, addedConn, false)
		return err
	}
	if err := c.Join(ctx, busRoom(room)); err != nil {
		h.undoJoin(id, user, room, addedConn, add.added)
		if errors.Is(err, service.ErrNoConnection) || errors.Is(err, service.ErrShardGone) {
			return nil // the client is gone: nobody to answer
		}
		if addedConn {
			// The shard may still have added the connection (a
			// timeout): take it out again, so the room and presence
			// agree.
			_ = c.Leave(busRoom(room))
		}
		return err
	}
	members, snap, err := h.snapshot(ctx, room)
	if err != nil {
		return err
	}
	epoch := h.Epoch()
	var msgs []json.RawMessage
	var more bool
	if req.After != nil && req.Epoch == epoch {
		msgs, more, err = h.after(ctx, room, *req.After, limit)
	} else {
		msgs, more, err = h.last(ctx, room, limit, 0)
	}
	if err != nil {
		return err
	}
	reply := joinedReply{Type: TypeJoined, ID: req.ID, Room: room, Members: members, Rev: snap, Epoch: epoch}
	reply.History, reply.More = fit(c, msgs, len(encode(reply)), req.After != nil && req.Epoch == epoch)
	reply.More = reply.More || more
	h.reply(c, reply)
	if add.first {
		h.publishPresence(room, user, EventJoin, add.rev)
	}
	return nil
}

// undoJoin takes back the storage writes of a join that failed: the room
// in the connection's record if the join put it there, the connection in
// the member list if the join added it.
func (h *Handler) undoJoin(id, user, room string, conn, member bool) {
	ctx, cancel := context.WithTimeout(h.life, h.cfg.RequestTimeout)
	defer cancel()
	if conn {
		if _, _, err := h.removeConnRoom(ctx, id, room); err != nil {
			h.log.Warn("chat: undo join", "conn", id, "room", room, "err", err)
		}
	}
	if member {
		if err := h.leaveMember(ctx, room, user, id); err != nil {
			h.log.Warn("chat: undo join", "conn", id, "room", room, "err", err)
		}
	}
}

// leave takes the connection out of a room.
func (h *Handler) leave(ctx context.Context, c *service.Conn, req *request) error {
	room, id := req.Room, c.ID()
	if err := h.needRoom(ctx, room); err != nil {
		return err
	}
	was, user, err := h.removeConnRoom(ctx, id, room)
	if err != nil {
		return err
	}
	if !was {
		return failure(CodeNotMember, "not in room "+room)
	}
	if user == "" {
		user = c.User()
	}
	if err := h.leaveMember(ctx, room, user, id); err != nil {
		return err
	}
	if err := c.Leave(busRoom(room)); err != nil {
		return err
	}
	h.reply(c, leftReply{Type: TypeLeft, ID: req.ID, Room: room})
	return nil
}

// who answers with the members of a room.
func (h *Handler) who(ctx context.Context, c *service.Conn, req *request) error {
	if err := h.needRoom(ctx, req.Room); err != nil {
		return err
	}
	members, rev, err := h.snapshot(ctx, req.Room)
	if err != nil {
		return err
	}
	h.reply(c, membersReply{Type: TypeMembers, ID: req.ID, Room: req.Room, Members: members, Rev: rev})
	return nil
}

// isMember reports whether connection id is in room. The mirror answers
// yes at once; a no is checked in the bucket, since the join may have been
// handled a moment ago by another instance.
func (h *Handler) isMember(ctx context.Context, id, room string) (bool, error) {
	if h.mirror.inRoom(id, room) {
		return true, nil
	}
	rec, _, err := h.getConn(ctx, id)
	if err != nil {
		return false, err
	}
	for _, r := range rec.Rooms {
		if r == room {
			return true, nil
		}
	}
	return false, nil
}
