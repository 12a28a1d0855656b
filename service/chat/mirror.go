package chat

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/shoal-gw/shoal/service"
)

// Keys of the presence bucket.
//
//	conn.<shard>.<n>      connRecord: the user of a connection and the rooms it joined
//	member.<room>.<user>  memberRecord: the connections of user in room
//
// and of the rooms bucket:
//
//	room.<room>           roomRecord: the room exists (it was joined once)
const (
	connPrefix   = "conn."
	memberPrefix = "member."
	roomPrefix   = "room."
	userPrefix   = "user."
)

func connKey(id string) string           { return connPrefix + id }
func memberKey(room, user string) string { return memberPrefix + room + "." + user }
func roomKey(room string) string         { return roomPrefix + room }
func accountKey(user string) string      { return userPrefix + user }
func shardOf(id string) string           { return id[:max(0, strings.IndexByte(id, '.'))] }
func splitMember(rest string) (string, string, bool) {
	room, user, ok := strings.Cut(rest, ".")
	return room, user, ok && validName(room, MaxRoom) && validName(user, MaxUser)
}

// connRecord is the value of conn.<id>.
type connRecord struct {
	User  string   `json:"user"`
	Rooms []string `json:"rooms"`
}

// memberRecord is the value of member.<room>.<user>: never empty (the key
// is deleted with the last connection).
type memberRecord struct {
	Conns []string `json:"conns"`
}

// mirror is this instance's copy of the presence and rooms buckets, kept
// by watches. It answers who is where without a storage round trip; where
// an answer must include every write made before a moment (joined, who),
// waitRev waits until the copy has caught up with that moment.
type mirror struct {
	mu   sync.RWMutex
	rev  uint64        // highest presence revision applied
	wake chan struct{} // closed and replaced when rev grows

	conns   map[string]connRecord          // conn id -> its record
	members map[string]map[string][]string // room -> user -> conn ids
	// ids indexes every connection id named in the bucket by its shard,
	// with the member keys that name it, for the cleanup of a dead shard.
	ids    map[string]*idRefs
	shards map[string]map[string]struct{} // shard -> conn ids
	rooms  map[string]struct{}
}

type idRefs struct {
	conn    bool
	members map[string]struct{} // "room.user"
}

func newMirror() *mirror {
	return &mirror{
		wake:    make(chan struct{}),
		conns:   make(map[string]connRecord),
		members: make(map[string]map[string][]string),
		ids:     make(map[string]*idRefs),
		shards:  make(map[string]map[string]struct{}),
		rooms:   make(map[string]struct{}),
	}
}

// follow applies a watch's entries until it ends, and closes loaded at
// the end of the watch's initial values.
func (m *mirror) follow(w *service.Watcher, apply func(service.Entry), loaded chan<- struct{}) {
	for e := range w.Updates() {
		if e.Key == "" {
			if loaded != nil {
				close(loaded)
				loaded = nil
			}
			continue
		}
		apply(e)
	}
}

// applyPresence applies one write of the presence bucket.
func (m *mirror) applyPresence(e service.Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case strings.HasPrefix(e.Key, connPrefix):
		id := e.Key[len(connPrefix):]
		var rec connRecord
		if e.Deleted || json.Unmarshal(e.Value, &rec) != nil {
			delete(m.conns, id)
			m.ref(id, func(r *idRefs) { r.conn = false })
		} else {
			m.conns[id] = rec
			m.ref(id, func(r *idRefs) { r.conn = true })
		}
	case strings.HasPrefix(e.Key, memberPrefix):
		rest := e.Key[len(memberPrefix):]
		room, user, ok := splitMember(rest)
		if !ok {
			break
		}
		var rec memberRecord
		if e.Deleted || json.Unmarshal(e.Value, &rec) != nil {
			rec.Conns = nil
		}
		users := m.members[room]
		for _, id := range users[user] {
			if !slices.Contains(rec.Conns, id) {
				m.ref(id, func(r *idRefs) { delete(r.members, rest) })
			}
		}
		if len(rec.Conns) == 0 {
			delete(users, user)
			if len(users) == 0 {
				delete(m.members, room)
			}
		} else {
			if users == nil {
				users = make(map[string][]string)
				m.members[room] = users
			}
			users[user] = rec.Conns
			for _, id := range rec.Conns {
				m.ref(id, func(r *idRefs) { r.members[rest] = struct{}{} })
			}
		}
	}
	if e.Revision > m.rev {
		m.rev = e.Revision
		close(m.wake)
		m.wake = make(chan struct{})
	}
}

// ref changes the references to a connection id and keeps the shard
// index in step. m.mu is held.
func (m *mirror) ref(id string, change func(*idRefs)) {
	r := m.ids[id]
	if r == nil {
		r = &idRefs{members: make(map[string]struct{})}
		m.ids[id] = r
	}
	change(r)
	shard := shardOf(id)
	if r.conn || len(r.members) > 0 {
		set := m.shards[shard]
		if set == nil {
			set = make(map[string]struct{})
			m.shards[shard] = set
		}
		set[id] = struct{}{}
		return
	}
	delete(m.ids, id)
	if set := m.shards[shard]; set != nil {
		delete(set, id)
		if len(set) == 0 {
			delete(m.shards, shard)
		}
	}
}

// applyRoom applies one write of the rooms bucket.
func (m *mirror) applyRoom(e service.Entry) {
	room, ok := strings.CutPrefix(e.Key, roomPrefix)
	if !ok || !validName(room, MaxRoom) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Deleted {
		delete(m.rooms, room)
	} else {
		m.rooms[room] = struct{}{}
	}
}

// waitRev returns once the mirror has applied presence revision rev, or
// ctx ended.
func (m *mirror) waitRev(ctx context.Context, rev uint64) error {
	for {
		m.mu.RLock()
		have, wake := m.rev, m.wake
		m.mu.RUnlock()
		if have >= rev {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// users returns the users in room, sorted.
func (m *mirror) users(room string) []string {
	m.mu.RLock()
	users := make([]string, 0, len(m.members[room]))
	for u := range m.members[room] {
		users = append(users, u)
	}
	m.mu.RUnlock()
	sort.Strings(users)
	return users
}

// inRoom reports whether the mirror has connection id in room.
func (m *mirror) inRoom(id, room string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Contains(m.conns[id].Rooms, room)
}

// roomKnown reports whether the mirror has seen room created.
func (m *mirror) roomKnown(room string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.rooms[room]
	return ok
}

// roomList returns up to limit rooms, most members first, then by name.
func (m *mirror) roomList(limit int) []roomInfo {
	m.mu.RLock()
	list := make([]roomInfo, 0, len(m.rooms))
	for r := range m.rooms {
		list = append(list, roomInfo{Room: r, Members: len(m.members[r])})
	}
	m.mu.RUnlock()
	sort.Slice(list, func(i, j int) bool {
		if list[i].Members != list[j].Members {
			return list[i].Members > list[j].Members
		}
		return list[i].Room < list[j].Room
	})
	if len(list) > limit {
		list = list[:limit]
	}
	return list
}

// shardConns returns, for every connection id of shard named in the
// bucket, the member keys ("room.user") that name it.
func (m *mirror) shardConns(shard string) map[string][]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string][]string, len(m.shards[shard]))
	for id := range m.shards[shard] {
		keys := make([]string, 0, len(m.ids[id].members))
		for k := range m.ids[id].members {
			keys = append(keys, k)
		}
		out[id] = keys
	}
	return out
}

// memberKeysOf returns the member keys ("room.user") naming connection id.
func (m *mirror) memberKeysOf(id string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.ids[id]
	if r == nil {
		return nil
	}
	keys := make([]string, 0, len(r.members))
	for k := range r.members {
		keys = append(keys, k)
	}
	return keys
}

// shardsNamed returns every shard that has a connection in the bucket.
func (m *mirror) shardsNamed() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.shards))
	for s := range m.shards {
		out = append(out, s)
	}
	return out
}
