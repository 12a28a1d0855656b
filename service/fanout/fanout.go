// Package fanout is the bench protocol's fan-out service (/ws/fanout): a
// connection's first message is the text "join <room>"; the service adds it
// to the room and, once the shard confirmed the membership, answers
// "joined <room>". Every later message of the connection is published to its
// room unchanged, so it reaches every member, the sender included.
//
// On the bus a room lives under "bench." so bench traffic cannot meet the
// rooms of other services. The protocol allows dots anywhere in a room name
// ("a..b", ".a"), which would make empty subject tokens, so each dot becomes
// a '~', a byte the protocol does not allow: the mapping stays one to one and
// every bench room is a single token under "bench.".
//
// The room of each connection is kept in this process's memory, so the
// service must run as one instance: with several in a queue group, a
// connection's later messages may reach an instance that never saw its join.
package fanout

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/shoal-gw/shoal/service"
)

const (
	// busPrefix keeps bench rooms apart from other rooms on the bus.
	busPrefix = "bench."
	// maxRoom is the protocol's longest room name.
	maxRoom = 64
	// joinTimeout bounds the wait for the shard's join reply. The worker
	// handling the connection waits too, so it must stay short.
	joinTimeout = 5 * time.Second

	closePolicy   = 1008
	reasonFirst   = "first message must be: join <room>"
	reasonJoining = "join failed"
)

// refused marks a connection being closed: its messages still in flight are
// dropped instead of each earning another close.
const refused = ""

// New returns the fan-out service's Handler. It also implements
// service.ShardWatcher, so it forgets the connections of a shard that went
// away without reporting their close.
func New() service.Handler { return &handler{} }

type handler struct {
	// rooms maps a connection id to its bus room, or to refused. Each key is
	// written only by the worker owning that connection (and by ShardDown
	// once its shard is gone), while every worker reads: a sync.Map suits
	// disjoint keys read far more often than written.
	rooms sync.Map
}

// Open accepts every connection: the first message decides.
func (h *handler) Open(*service.Conn) error { return nil }

// Message joins the connection on its first message and publishes every
// later one to its room.
func (h *handler) Message(c *service.Conn, op service.Opcode, data []byte) {
	if v, ok := h.rooms.Load(c.ID()); ok {
		room := v.(string)
		if room != refused {
			// An error means the bus is down; the sender sees its message
			// missing, and there is no one else to tell.
			_ = c.Service().Publish(room, op, data)
		}
		return
	}
	h.join(c, op, data)
}

// join handles a connection's first message.
func (h *handler) join(c *service.Conn, op service.Opcode, data []byte) {
	room, ok := parseJoin(op, data)
	if !ok {
		h.refuse(c, closePolicy, reasonFirst)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	bus := busRoom(room)
	if err := c.Join(ctx, bus); err != nil {
		if errors.Is(err, service.ErrNoConnection) {
			// The client is gone; its close event clears the mark.
			h.rooms.Store(c.ID(), refused)
			return
		}
		h.refuse(c, service.CloseInternalError, reasonJoining)
		return
	}
	h.rooms.Store(c.ID(), bus)
	_ = c.Send(service.Text, []byte("joined "+room))
}

func (h *handler) refuse(c *service.Conn, code int, reason string) {
	h.rooms.Store(c.ID(), refused)
	_ = c.Close(code, reason)
}

// Close forgets the connection.
func (h *handler) Close(c *service.Conn, _ int, _ string) { h.rooms.Delete(c.ID()) }

// ShardUp does nothing: a shard's connections announce themselves.
func (h *handler) ShardUp(string) {}

// ShardDown forgets the connections of shard: their close events will never
// come, and a shard restarted under the same id numbers its connections anew.
func (h *handler) ShardDown(shard string) {
	prefix := shard + "."
	h.rooms.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			h.rooms.Delete(k)
		}
		return true
	})
}

// parseJoin returns the room of a "join <room>" text message.
func parseJoin(op service.Opcode, data []byte) (string, bool) {
	const verb = "join "
	if op != service.Text || len(data) <= len(verb) || string(data[:len(verb)]) != verb {
		return "", false
	}
	room := data[len(verb):]
	if len(room) > maxRoom {
		return "", false
	}
	for _, b := range room {
		if !roomByte(b) {
			return "", false
		}
	}
	return string(room), true
}

func roomByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '_' || b == '.' || b == '-'
}

// busRoom maps a protocol room to its bus room.
func busRoom(room string) string {
	return busPrefix + strings.ReplaceAll(room, ".", "~")
}
