package chat

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/shoal-gw/shoal/service"
)

// History is one stream; each room is one subject of it,
// "<prefix>.chat.msg.<room>", holding the room's last Config.History
// messages. A message's seq is its stream sequence and its prev the seq of
// the room's message before it: every append expects the room's last seq
// to be prev, so the messages of a room form one chain, however many
// instances append at once.

// historyLimit applies the protocol's default and maximum to a limit.
func historyLimit(limit *int, after bool) (int, error) {
	def, most := DefaultLimit, MaxLimit
	if after {
		def, most = MaxLimitAfter, MaxLimitAfter
	}
	if limit == nil {
		return def, nil
	}
	if *limit < 1 {
		return 0, failure(CodeBadRequest, "limit must be at least 1")
	}
	return min(*limit, most), nil
}

// say stores a message and publishes it to the room.
func (h *Handler) say(ctx context.Context, c *service.Conn, req *request) error {
	room, user := req.Room, c.User()
	if err := checkRoom(room); err != nil {
		return err
	}
	text := strings.TrimSpace(req.Text)
	if text == "" {
		return failure(CodeBadRequest, "text is empty")
	}
	if len(text) > h.cfg.MaxText {
		return failure(CodeTooLong, "text longer than the limit")
	}
	if err := h.needRoom(ctx, room); err != nil {
		return err
	}
	if ok, err := h.isMember(ctx, c.ID(), room); err != nil {
		return err
	} else if !ok {
		return failure(CodeNotMember, "not in room "+room)
	}
	if !h.says.allow(user, time.Now()) {
		return failure(CodeRateLimited, "too many messages, slow down")
	}
	m, epoch, err := h.store(ctx, room, user, text)
	if err != nil {
		return err
	}
	// Stored first, published second: whoever sees the live copy can find
	// it in history too.
	if err := h.svc.Publish(busRoom(room), service.Text, appendMessage(nil, &m, epoch)); err != nil {
		h.log.Warn("chat: publish message", "room", room, "seq", m.Seq, "err", err)
	}
	h.reply(c, sentReply{Type: TypeSent, ID: req.ID, Room: room, Seq: m.Seq})
	return nil
}

// chains holds, per room, what this instance knows of the room's last
// seq, and serializes this instance's appends to the room: they would
// only conflict with each other.
type chains struct {
	mu sync.Mutex
	m  map[string]*chain
}

type chain struct {
	mu    sync.Mutex
	last  uint64
	epoch string // the epoch last belongs to; "" when last is unknown
}

func (cs *chains) get(room string) *chain {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.m == nil {
		cs.m = make(map[string]*chain)
	}
	ch := cs.m[room]
	if ch == nil {
		ch = &chain{}
		cs.m[room] = ch
	}
	return ch
}

// store appends a message to room's chain and returns it with the epoch
// its seq belongs to.
func (h *Handler) store(ctx context.Context, room, user, text string) (message, string, error) {
	ch := h.chains.get(room)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	subject := h.subject + room
	m := message{Room: room, User: user, Text: text, TS: time.Now().UTC().Format(timestampLayout)}
	// One id for every attempt: an attempt whose answer was lost, and
	// that was stored after all, makes the next one a duplicate.
	id := h.requestID()
	for range maxCAS {
		epoch := h.Epoch()
		if ch.epoch != epoch {
			last, err := h.history.LastOf(ctx, subject)
			switch {
			case errors.Is(err, service.ErrNotFound):
				last.Seq = 0
			case errors.Is(err, service.ErrNoStream):
				if err := h.recreate(ctx); err != nil {
					return message{}, "", err
				}
				continue
			case err != nil:
				return message{}, "", err
			}
			if last.Seq < ch.last && ch.epoch != "" {
				// The room went back in time: the stream was recreated.
				h.refreshEpoch(ctx)
				epoch = h.Epoch()
			}
			ch.last, ch.epoch = last.Seq, epoch
		}
		m.Prev = ch.last
		data, _ := json.Marshal(stored{User: user, Text: text, TS: m.TS, Prev: m.Prev})
		a, err := h.history.Append(ctx, subject, data, service.WithMsgID(id), service.WithExpectLast(m.Prev))
		switch {
		case err == nil && !a.Duplicate:
			m.Seq, ch.last = a.Seq, a.Seq
			return m, epoch, nil
		case err == nil:
			// Stored by an earlier attempt, with that attempt's prev.
			ch.epoch = ""
			got, err := h.history.Get(ctx, a.Seq)
			if err != nil {
				return message{}, "", err
			}
			var s stored
			if err := json.Unmarshal(got.Data, &s); err != nil {
				return message{}, "", err
			}
			m.Seq, m.Prev, m.TS = a.Seq, s.Prev, s.TS
			return m, epoch, nil
		case errors.Is(err, service.ErrRevisionConflict):
			ch.epoch = "" // another instance appended: read the room's last again
		case errors.Is(err, service.ErrNoStream):
			if err := h.recreate(ctx); err != nil {
				return message{}, "", err
			}
		case errors.Is(err, service.ErrUnavailable) && ctx.Err() == nil:
			ch.epoch = "" // the answer may be lost: retry, the id guards
		default:
			return message{}, "", err
		}
	}
	return message{}, "", errContended
}

// recreate makes the history stream again after it was deleted; its
// epoch changes, and every room's chain starts over.
func (h *Handler) recreate(ctx context.Context) error {
	if err := h.history.Ensure(ctx); err != nil {
		return err
	}
	h.setEpoch(h.history.Created())
	h.log.Warn("chat: history stream was missing; made it again", "stream", h.cfg.Stream, "epoch", h.Epoch())
	return nil
}

// refreshEpoch reads the history stream's creation time again, to notice
// a stream recreated by someone else.
func (h *Handler) refreshEpoch(ctx context.Context) {
	st, err := h.history.State(ctx)
	if errors.Is(err, service.ErrNoStream) {
		_ = h.recreate(ctx)
		return
	}
	if err != nil {
		return
	}
	old := h.Epoch()
	h.setEpoch(st.Created)
	if e := h.Epoch(); e != old {
		h.log.Warn("chat: history stream was recreated", "stream", h.cfg.Stream, "epoch", e, "was", old)
	}
}

// historyRequest answers a history request.
func (h *Handler) historyRequest(ctx context.Context, c *service.Conn, req *request) error {
	room := req.Room
	if err := h.needRoom(ctx, room); err != nil {
		return err
	}
	if req.Before != nil && req.After != nil {
		return failure(CodeBadRequest, "before and after exclude each other")
	}
	if req.Before != nil && *req.Before < 1 {
		return failure(CodeBadRequest, "before must be at least 1")
	}
	epoch := h.Epoch()
	// An "after" from another epoch means nothing here: answer as if it
	// were absent, as join does.
	after := req.After != nil && (req.Epoch == "" || req.Epoch == epoch)
	limit, err := historyLimit(req.Limit, after)
	if err != nil {
		return err
	}
	var msgs []json.RawMessage
	var more bool
	switch {
	case after:
		msgs, more, err = h.after(ctx, room, *req.After, limit)
	case req.Before != nil:
		msgs, more, err = h.last(ctx, room, limit, *req.Before)
	default:
		msgs, more, err = h.last(ctx, room, limit, 0)
	}
	if err != nil {
		return err
	}
	reply := historyReply{Type: TypeHistory, ID: req.ID, Room: room, Epoch: epoch}
	reply.Messages, reply.More = fit(c, msgs, len(encode(reply)), after)
	reply.More = reply.More || more
	h.reply(c, reply)
	return nil
}

// headerRoom is what a reply's NATS message keeps free for its headers.
const headerRoom = 4 << 10

// fit trims a page of messages so that the reply carrying them fits in
// one NATS message, since the bus refuses a larger one and the client
// would get no answer at all. A page after a seq keeps its oldest
// messages (oldest true), a page of the last ones its newest; the bool
// says whether any was cut, which the reply's more tells the client.
// envelope is the size of the reply without its messages.
func fit(c *service.Conn, msgs []json.RawMessage, envelope int, oldest bool) ([]json.RawMessage, bool) {
	room := int(c.Service().NATS().MaxPayload()) - headerRoom - envelope
	n, size := 0, 0
	for n < len(msgs) {
		m := msgs[n]
		if !oldest {
			m = msgs[len(msgs)-1-n]
		}
		// Each takes its comma too. The first always goes, so that a
		// client asking for the rest moves on.
		if n > 0 && size+len(m)+1 > room {
			break
		}
		size += len(m) + 1
		n++
	}
	if n == len(msgs) {
		return msgs, false
	}
	if oldest {
		return msgs[:n], true
	}
	return msgs[len(msgs)-n:], true
}

// after returns up to n messages of room after seq, oldest first.
func (h *Handler) after(ctx context.Context, room string, seq uint64, n int) ([]json.RawMessage, bool, error) {
	msgs, more, err := h.history.Range(ctx, h.subject+room, seq, n)
	return h.render(room, msgs), more, err
}

// last returns room's newest n messages below before (0: all), oldest
// first.
func (h *Handler) last(ctx context.Context, room string, n int, before uint64) ([]json.RawMessage, bool, error) {
	msgs, more, err := h.history.Last(ctx, h.subject+room, n, before)
	return h.render(room, msgs), more, err
}

// render turns stored messages into the protocol's message objects.
func (h *Handler) render(room string, msgs []service.Msg) []json.RawMessage {
	epoch := h.Epoch()
	out := make([]json.RawMessage, 0, len(msgs))
	for _, sm := range msgs {
		var s stored
		if err := json.Unmarshal(sm.Data, &s); err != nil {
			h.log.Warn("chat: unreadable stored message", "room", room, "seq", sm.Seq, "err", err)
			continue
		}
		m := message{Room: room, User: s.User, Text: s.Text, Seq: sm.Seq, Prev: s.Prev, TS: s.TS}
		out = append(out, appendMessage(nil, &m, epoch))
	}
	return out
}
