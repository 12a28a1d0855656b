package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Request types, the "type" of a client message.
const (
	TypeRegister = "register"
	TypeLogin    = "login"
	TypeJoin     = "join"
	TypeSay      = "say"
	TypeLeave    = "leave"
	TypeWho      = "who"
	TypeRooms    = "rooms"
	TypeHistory  = "history"
	TypePing     = "ping"
)

// Reply and event types, the "type" of a server message.
const (
	TypeWelcome  = "welcome"
	TypeJoined   = "joined"
	TypePresence = "presence"
	TypeMessage  = "message"
	TypeSent     = "sent"
	TypeLeft     = "left"
	TypeMembers  = "members"
	TypePong     = "pong"
	TypeError    = "error"
)

// Presence events.
const (
	EventJoin  = "join"
	EventLeave = "leave"
)

// Protocol limits.
const (
	MaxUser         = 32
	MaxRoom         = 64
	MinPassword     = 8
	MaxPassword     = 72 // bcrypt reads no further
	DefaultMaxText  = 4096
	DefaultLimit    = 50   // history messages without "after"
	MaxLimit        = 100  // history messages without "after"
	MaxLimitAfter   = 1000 // history messages with "after" (also the default)
	MaxRoomsListed  = 500
	timestampLayout = "2006-01-02T15:04:05.000Z07:00"
)

// request is a decoded client message: the union of every request's
// fields. Pointers tell an absent number from zero.
type request struct {
	Type     string          `json:"type"`
	ID       json.RawMessage `json:"id"`
	User     string          `json:"user"`
	Password string          `json:"password"`
	Room     string          `json:"room"`
	Text     string          `json:"text"`
	After    *uint64         `json:"after"`
	Before   *uint64         `json:"before"`
	Epoch    string          `json:"epoch"`
	Limit    *int            `json:"limit"`
}

// known lists the request types and whether they need a user.
var known = map[string]bool{
	TypeRegister: false,
	TypeLogin:    false,
	TypeJoin:     true,
	TypeSay:      true,
	TypeLeave:    true,
	TypeWho:      true,
	TypeRooms:    true,
	TypeHistory:  true,
	TypePing:     true,
}

// decode parses one client message. On failure it still returns what it
// could read of the request, so the error can echo its id.
func decode(data []byte) (request, *protoError) {
	var req request
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return req, failure(CodeBadJSON, "a message is one JSON object")
	}
	if err := json.Unmarshal(data, &req); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			req = request{}
			return req, failure(CodeBadJSON, "invalid JSON: "+err.Error())
		}
		// Well-formed JSON with a field of the wrong type.
		req.ID = validID(req.ID)
		return req, failure(CodeBadRequest, "field "+strconv.Quote(te.Field)+" must be "+kind(te.Type.Kind().String()))
	}
	if string(req.ID) == "null" {
		req.ID = nil
	}
	if len(req.ID) > 0 && validID(req.ID) == nil {
		req.ID = nil
		return req, failure(CodeBadRequest, `"id" must be a string or a number`)
	}
	if req.Type == "" {
		return req, failure(CodeBadRequest, `"type" is missing`)
	}
	if _, ok := known[req.Type]; !ok {
		return req, failure(CodeUnknownType, "unknown type "+strconv.Quote(req.Type))
	}
	return req, nil
}

func kind(k string) string {
	switch k {
	case "uint64", "int":
		return "a whole number"
	case "slice":
		return "a string or a number"
	}
	return "a " + k
}

// validID returns id if it is a JSON string or number, else nil.
func validID(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return nil
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return id
	}
	return nil
}

// validName reports whether s is 1 to max bytes of [A-Za-z0-9_-].
func validName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Replies. Field order and names are the protocol's; "id" is the
// request's, echoed verbatim.

type welcomeReply struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	User    string          `json:"user"`
	Token   string          `json:"token"`
	Expires string          `json:"expires"`
}

type joinedReply struct {
	Type    string            `json:"type"`
	ID      json.RawMessage   `json:"id,omitempty"`
	Room    string            `json:"room"`
	Members []string          `json:"members"`
	Rev     uint64            `json:"rev"`
	History []json.RawMessage `json:"history"`
	Epoch   string            `json:"epoch"`
	More    bool              `json:"more"`
}

type presenceEvent struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	User  string `json:"user"`
	Event string `json:"event"`
	Rev   uint64 `json:"rev"`
}

type sentReply struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
	Room string          `json:"room"`
	Seq  uint64          `json:"seq"`
}

type leftReply struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
	Room string          `json:"room"`
}

type membersReply struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Room    string          `json:"room"`
	Members []string        `json:"members"`
	Rev     uint64          `json:"rev"`
}

type roomInfo struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
}

type roomsReply struct {
	Type  string          `json:"type"`
	ID    json.RawMessage `json:"id,omitempty"`
	Rooms []roomInfo      `json:"rooms"`
}

type historyReply struct {
	Type     string            `json:"type"`
	ID       json.RawMessage   `json:"id,omitempty"`
	Room     string            `json:"room"`
	Messages []json.RawMessage `json:"messages"`
	Epoch    string            `json:"epoch"`
	More     bool              `json:"more"`
}

type pongReply struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id,omitempty"`
}

type errorReply struct {
	Type    string          `json:"type"`
	ID      json.RawMessage `json:"id,omitempty"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Room    string          `json:"room,omitempty"`
}

// encode writes a reply. HTML is not escaped, so an "id" comes back byte
// for byte and texts read the same in replies as in live messages.
func encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only the types above are encoded, with strings that json
		// always can write.
		panic("chat: encode: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// message is one chat message, stored and delivered.
type message struct {
	Room string
	User string
	Text string
	Seq  uint64
	Prev uint64
	TS   string // timestampLayout, UTC
}

// stored is a message's payload in the history stream; room and seq are
// the subject and sequence of the stream message.
type stored struct {
	User string `json:"user"`
	Text string `json:"text"`
	TS   string `json:"ts"`
	Prev uint64 `json:"prev"`
}

// appendMessage writes m as the protocol's message object. It is the hot
// path of every say: written by hand into one buffer, with no reflection.
func appendMessage(b []byte, m *message, epoch string) []byte {
	b = append(b, `{"type":"message","room":`...)
	b = appendString(b, m.Room)
	b = append(b, `,"user":`...)
	b = appendString(b, m.User)
	b = append(b, `,"text":`...)
	b = appendString(b, m.Text)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `,"prev":`...)
	b = strconv.AppendUint(b, m.Prev, 10)
	b = append(b, `,"ts":`...)
	b = appendString(b, m.TS)
	b = append(b, `,"epoch":`...)
	b = appendString(b, epoch)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does; so do U+2028 and U+2029 escapes for the same
// reason it has (JavaScript source).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
