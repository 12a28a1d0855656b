package bench

import (
	"encoding/json"
	"strconv"
)

// The bench's side of the chat protocol (service/chat/PROTOCOL.md): JSON
// text frames, requests with an "id" that their answer carries back.
// Requests are written by hand: the names in them are the bench's own
// (letters, digits, - and _) and a say's text is ASCII without quotes, so
// nothing needs escaping.

// Request ids. A say's id is its number in its bench process's schedule;
// the others are strings: the session's, and a join's or history's with
// the index of the room among the user's rooms.
const (
	chatIDRegister = "r"
	chatIDLogin    = "l"
	chatIDJoin     = 'j'
	chatIDHistory  = 'h'
)

// chatSessionRequest is a register or login request.
func chatSessionRequest(kind, user, password string) []byte {
	id := chatIDRegister
	if kind == "login" {
		id = chatIDLogin
	}
	return []byte(`{"type":"` + kind + `","user":"` + user + `","password":"` + password + `","id":"` + id + `"}`)
}

// chatJoinRequest asks to join room; with resume it asks for what came
// after seq after of epoch, as a client back from a reconnect does.
func chatJoinRequest(room string, member int, resume bool, after uint64, epoch string) []byte {
	b := append([]byte(`{"type":"join","room":"`), room...)
	b = append(b, '"')
	if resume {
		b = appendAfter(b, after, epoch)
	}
	return appendStringID(b, chatIDJoin, member)
}

// chatHistoryRequest asks for room's messages after seq after of epoch.
func chatHistoryRequest(room string, member int, after uint64, epoch string) []byte {
	b := append([]byte(`{"type":"history","room":"`), room...)
	b = appendAfter(append(b, '"'), after, epoch)
	return appendStringID(b, chatIDHistory, member)
}

func appendAfter(b []byte, after uint64, epoch string) []byte {
	b = append(b, `,"after":`...)
	b = strconv.AppendUint(b, after, 10)
	b = append(b, `,"epoch":`...)
	return strconv.AppendQuote(b, epoch)
}

func appendStringID(b []byte, kind byte, n int) []byte {
	b = append(b, `,"id":"`...)
	b = append(b, kind)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, `"}`...)
}

// appendChatSay appends a say of pl's text (appendChatText) to room, with
// id k.
func appendChatSay(b []byte, room string, pl Payload, size int, k uint64) []byte {
	b = append(b, `{"type":"say","room":"`...)
	b = append(b, room...)
	b = append(b, `","text":"`...)
	b = appendChatText(b, pl, size)
	b = append(b, `","id":`...)
	b = strconv.AppendUint(b, k, 10)
	return append(b, '}')
}

// chatTextMark starts the text of every bench message.
const chatTextMark = "bench "

// appendChatText appends the text that carries pl: "bench DUE SENDER SEQ"
// in decimal, padded with " xxx..." to size bytes when size leaves room.
func appendChatText(b []byte, pl Payload, size int) []byte {
	start := len(b)
	b = append(b, chatTextMark...)
	b = strconv.AppendInt(b, pl.Time, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, pl.Sender, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, pl.Seq, 10)
	if pad := size - (len(b) - start); pad >= 2 {
		b = append(b, ' ')
		for range pad - 1 {
			b = append(b, 'x')
		}
	}
	return b
}

// parseChatText reads a text written by appendChatText; false for any
// other text.
func parseChatText(t []byte) (Payload, bool) {
	s := scanText(t)
	s.lit(chatTextMark)
	due := s.uint()
	s.lit(" ")
	sender := s.uint()
	s.lit(" ")
	seq := s.uint()
	if !s.ok || due > 1<<63-1 || len(s.rest) > 0 && s.rest[0] != ' ' {
		return Payload{}, false
	}
	return Payload{Time: int64(due), Sender: sender, Seq: seq}, true
}

// chatMsg is a message event or history item. Its byte slices point into
// the frame it came in.
type chatMsg struct {
	room, text, epoch []byte
	seq, prev         uint64
}

// The start of the server's message events and presence events, whose
// fields come in the protocol's order (type first).
const chatMessageStart = `{"type":"message","room":"`

var chatPresenceStart = []byte(`{"type":"presence",`)

// parseChatMessage reads a message event as the chat service writes it,
// field by field and without allocating: the path every delivery takes.
// It returns false for anything else, or a message written another way
// (escapes in a string, other field order), which decodeChat reads.
func parseChatMessage(p []byte) (chatMsg, bool) {
	var m chatMsg
	s := scanText(p)
	s.lit(chatMessageStart)
	m.room = s.str()
	s.lit(`,"user":"`)
	s.str()
	s.lit(`,"text":"`)
	m.text = s.str()
	s.lit(`,"seq":`)
	m.seq = s.uint()
	s.lit(`,"prev":`)
	m.prev = s.uint()
	s.lit(`,"ts":"`)
	s.str()
	s.lit(`,"epoch":"`)
	m.epoch = s.str()
	s.lit("}")
	return m, s.ok && len(s.rest) == 0
}

// chatFrame is any server message, decoded with encoding/json: replies,
// and events the fast path did not read.
type chatFrame struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	User     string          `json:"user"`
	Token    string          `json:"token"`
	Room     string          `json:"room"`
	Text     string          `json:"text"`
	Seq      uint64          `json:"seq"`
	Prev     uint64          `json:"prev"`
	Epoch    string          `json:"epoch"`
	More     bool            `json:"more"`
	Code     string          `json:"code"`
	Message  string          `json:"message"`
	History  []chatItem      `json:"history"`
	Messages []chatItem      `json:"messages"`
}

// chatItem is a message object of a joined or history reply.
type chatItem struct {
	Room  string `json:"room"`
	Text  string `json:"text"`
	Seq   uint64 `json:"seq"`
	Prev  uint64 `json:"prev"`
	Epoch string `json:"epoch"`
}

// msg is the item as a chatMsg.
func (it *chatItem) msg() chatMsg {
	return chatMsg{room: []byte(it.Room), text: []byte(it.Text), epoch: []byte(it.Epoch), seq: it.Seq, prev: it.Prev}
}

// decodeChat decodes a server message; false if it is not a JSON object.
func decodeChat(p []byte) (chatFrame, bool) {
	var f chatFrame
	if err := json.Unmarshal(p, &f); err != nil || f.Type == "" {
		return f, false
	}
	return f, true
}

// chatID is a reply's id: a say's number (isSay), or a string id's kind
// and number ("j3": 'j', 3; "r": 'r', 0).
func chatID(raw json.RawMessage) (kind byte, n uint64, isSay, ok bool) {
	if len(raw) == 0 {
		return 0, 0, false, false
	}
	if raw[0] != '"' {
		n, rest, ok := cutUint(raw)
		return 0, n, true, ok && len(rest) == 0
	}
	s, err := strconv.Unquote(string(raw))
	if err != nil || s == "" {
		return 0, 0, false, false
	}
	if len(s) == 1 {
		return s[0], 0, false, true
	}
	n, rest, ok := cutUint([]byte(s[1:]))
	return s[0], n, false, ok && len(rest) == 0
}
