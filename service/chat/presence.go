package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/shoal-gw/shoal/service"
)

// Presence lives in the presence bucket (see mirror.go for the keys), and
// every change is a compare-and-set on one key, so instances racing on
// the same connection or the same (room, user) never lose a write.
//
// Why no write is lost to a race between a join and the connection's
// close, handled by two instances (NATS gives each event to any of them):
// a join writes conn.<id> and then member.<room>.<user>, and only then asks
// the shard to add the connection to the room, which the shard refuses
// once the connection is gone. So either the shard refused (the join
// undoes its writes), or the connection was alive after both writes, and
// its close event, published by the shard after that, finds the room in
// conn.<id> when the closing instance reads it (reads go to the stream
// leader and see every confirmed write).
//
// A user is in a room while member.<room>.<user> lists one of their
// connections. The instance whose write takes the list from empty to one
// (or deletes the key) publishes the presence event, with the revision of
// that write: events of one (room, user) may reach clients out of order
// when instances race, and the revision puts them back in order.

// maxCAS bounds the compare-and-set retries of one key; each retry means
// another writer won, so reaching it means heavy contention on one key.
const maxCAS = 100

var errContended = fmt.Errorf("%w: too much contention", service.ErrUnavailable)

// addConnRoom records room in conn.<id> (creating it for user). It reports
// false if room was there already.
func (h *Handler) addConnRoom(ctx context.Context, id, user, room string) (bool, error) {
	key := connKey(id)
	for range maxCAS {
		rec, rev, err := h.getConn(ctx, id)
		if err != nil {
			return false, err
		}
		if rev == 0 {
			rec = connRecord{User: user}
		}
		if slices.Contains(rec.Rooms, room) {
			return false, nil
		}
		rec.Rooms = append(rec.Rooms, room)
		b, _ := json.Marshal(rec)
		if rev == 0 {
			_, err = h.presence.Create(ctx, key, b)
		} else {
			_, err = h.presence.Update(ctx, key, b, rev)
		}
		if errors.Is(err, service.ErrKeyExists) || errors.Is(err, service.ErrRevisionConflict) {
			continue
		}
		return err == nil, err
	}
	return false, errContended
}

// removeConnRoom takes room out of conn.<id>, deleting the key with its
// last room. It reports whether room was there, and the user.
func (h *Handler) removeConnRoom(ctx context.Context, id, room string) (bool, string, error) {
	key := connKey(id)
	for range maxCAS {
		rec, rev, err := h.getConn(ctx, id)
		if err != nil || rev == 0 || !slices.Contains(rec.Rooms, room) {
			return false, rec.User, err
		}
		rec.Rooms = slices.DeleteFunc(rec.Rooms, func(r string) bool { return r == room })
		if len(rec.Rooms) == 0 {
			_, err = h.presence.Delete(ctx, key, rev)
		} else {
			b, _ := json.Marshal(rec)
			_, err = h.presence.Update(ctx, key, b, rev)
		}
		if errors.Is(err, service.ErrRevisionConflict) {
			continue
		}
		return err == nil, rec.User, err
	}
	return false, "", errContended
}

// getConn reads conn.<id>; revision 0 means there is none.
func (h *Handler) getConn(ctx context.Context, id string) (connRecord, uint64, error) {
	var rec connRecord
	e, err := h.presence.Get(ctx, connKey(id))
	if errors.Is(err, service.ErrNotFound) {
		return rec, 0, nil
	}
	if err != nil {
		return rec, 0, err
	}
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		// Not written by this service: start the record over.
		h.log.Warn("chat: bad connection record", "conn", id, "err", err)
		return connRecord{}, e.Revision, nil
	}
	return rec, e.Revision, nil
}

// memberAdd is what addMember did.
type memberAdd struct {
	added bool   // the connection was not in the list before
	first bool   // nor was any other of the user's: the user is new in the room
	rev   uint64 // the revision of the write, when added
}

// addMember adds connection id to member.<room>.<user>.
func (h *Handler) addMember(ctx context.Context, room, user, id string) (memberAdd, error) {
	key := memberKey(room, user)
	for range maxCAS {
		rec, rev, err := h.getMember(ctx, room, user)
		if err != nil {
			return memberAdd{}, err
		}
		if slices.Contains(rec.Conns, id) {
			return memberAdd{}, nil
		}
		first := len(rec.Conns) == 0
		rec.Conns = append(rec.Conns, id)
		b, _ := json.Marshal(rec)
		var nrev uint64
		if rev == 0 {
			nrev, err = h.presence.Create(ctx, key, b)
		} else {
			nrev, err = h.presence.Update(ctx, key, b, rev)
		}
		if errors.Is(err, service.ErrKeyExists) || errors.Is(err, service.ErrRevisionConflict) {
			continue
		}
		if err != nil {
			return memberAdd{}, err
		}
		return memberAdd{added: true, first: first, rev: nrev}, nil
	}
	return memberAdd{}, errContended
}

// removeMember takes connection id out of member.<room>.<user>, deleting
// the key with the last one. It reports whether the user left the room
// with it (and the revision of the deletion).
func (h *Handler) removeMember(ctx context.Context, room, user, id string) (bool, uint64, error) {
	key := memberKey(room, user)
	for range maxCAS {
		rec, rev, err := h.getMember(ctx, room, user)
		if err != nil || !slices.Contains(rec.Conns, id) {
			return false, 0, err
		}
		rec.Conns = slices.DeleteFunc(rec.Conns, func(c string) bool { return c == id })
		var nrev uint64
		if len(rec.Conns) == 0 {
			nrev, err = h.presence.Delete(ctx, key, rev)
		} else {
			b, _ := json.Marshal(rec)
			_, err = h.presence.Update(ctx, key, b, rev)
		}
		if errors.Is(err, service.ErrRevisionConflict) {
			continue
		}
		if err != nil {
			return false, 0, err
		}
		return len(rec.Conns) == 0, nrev, nil
	}
	return false, 0, errContended
}

// getMember reads member.<room>.<user>; revision 0 means there is none.
func (h *Handler) getMember(ctx context.Context, room, user string) (memberRecord, uint64, error) {
	var rec memberRecord
	e, err := h.presence.Get(ctx, memberKey(room, user))
	if errors.Is(err, service.ErrNotFound) {
		return rec, 0, nil
	}
	if err != nil {
		return rec, 0, err
	}
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		h.log.Warn("chat: bad member record", "room", room, "user", user, "err", err)
		return memberRecord{}, e.Revision, nil
	}
	return rec, e.Revision, nil
}

// leaveMember removes id from room's members and tells the room when the
// user left with it.
func (h *Handler) leaveMember(ctx context.Context, room, user, id string) error {
	left, rev, err := h.removeMember(ctx, room, user, id)
	if err == nil && left {
		h.publishPresence(room, user, EventLeave, rev)
	}
	return err
}

// dropConn forgets a connection that is gone: it leaves every room its
// record lists, then deletes the record. A join that added a room in
// between makes the deletion conflict, and the record is read again.
// Member lists that name the connection without its record listing the
// room (a request that failed half way) are cleaned too, as the mirror
// knows them.
func (h *Handler) dropConn(ctx context.Context, id string) error {
	for range maxCAS {
		rec, rev, err := h.getConn(ctx, id)
		if err != nil {
			return err
		}
		for _, room := range rec.Rooms {
			if err := h.leaveMember(ctx, room, rec.User, id); err != nil {
				return err
			}
		}
		for _, rest := range h.mirror.memberKeysOf(id) {
			room, user, _ := splitMember(rest)
			if rec.User == user && slices.Contains(rec.Rooms, room) {
				continue
			}
			if err := h.leaveMember(ctx, room, user, id); err != nil {
				return err
			}
		}
		if rev == 0 {
			return nil
		}
		_, err = h.presence.Delete(ctx, connKey(id), rev)
		if errors.Is(err, service.ErrRevisionConflict) {
			continue
		}
		return err
	}
	return errContended
}

// publishPresence tells room that user joined or left.
func (h *Handler) publishPresence(room, user, event string, rev uint64) {
	b := encode(presenceEvent{Type: TypePresence, Room: room, User: user, Event: event, Rev: rev})
	if err := h.svc.Publish(busRoom(room), service.Text, b); err != nil {
		h.log.Warn("chat: publish presence", "room", room, "err", err)
	}
}

// snapshot returns the members of room as of now: every presence write
// confirmed before the call is in it. rev is the presence revision it
// reflects; events with a revision above it are news to its reader.
func (h *Handler) snapshot(ctx context.Context, room string) ([]string, uint64, error) {
	rev, err := h.presence.LastRevision(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := h.mirror.waitRev(ctx, rev); err != nil {
		return nil, 0, fmt.Errorf("%w: presence watch behind: %w", service.ErrUnavailable, err)
	}
	return h.mirror.users(room), rev, nil
}

// busRoom is the bus room of a chat room: under "chat." so chat rooms
// cannot meet other services' rooms.
func busRoom(room string) string { return "chat." + room }
