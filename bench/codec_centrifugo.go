package bench

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/gobwas/ws"
)

// The parts of Centrifugo's client protocol (v2, JSON) the bench speaks:
// a command is {"id":N,"connect"|"subscribe"|"publish":{...}}, its reply
// {"id":N,...} or {"id":N,"error":{...}}; a publication reaches the
// subscribers as {"push":{"channel":C,"pub":{"data":...}}}. A WebSocket
// message may carry several, one per line. Every ping interval the server
// sends {} and drops a client that does not answer {} in time.
const (
	// CentrifugoPath is Centrifugo's WebSocket endpoint.
	CentrifugoPath = "/connection/websocket"
	// CentrifugoNamespace is the namespace of the bench's channels: room r
	// is channel bench:r.
	CentrifugoNamespace = "bench"

	// Command ids: every connection sends one connect and at most one
	// subscribe, so their replies are told apart by id alone.
	centConnectID   = 1
	centSubscribeID = 2
	centFirstPubID  = 3
)

// centPing is both the server's ping and the client's pong.
var centPing = []byte("{}")

// centrifugoCodec speaks Centrifugo's client protocol. Every connection
// authenticates as user b<global index> with an HS256 token signed by
// the bench, unless no secret is set.
type centrifugoCodec struct {
	secret []byte
	offset int
	// rooms[i] is the room connection i subscribed to; written by Join and
	// read by Decode, which never run at once for one connection.
	rooms []string
	// ids[i] is the id of connection i's next publish.
	ids []atomic.Uint32
}

func newCentrifugoCodec(cfg CodecConfig) *centrifugoCodec {
	k := &centrifugoCodec{offset: cfg.Offset, rooms: make([]string, cfg.Conns), ids: make([]atomic.Uint32, cfg.Conns)}
	if cfg.HMACSecret != "" {
		k.secret = []byte(cfg.HMACSecret)
	}
	return k
}

// jwtHeader is the encoded header of every token: HS256.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// CentrifugoToken returns a connection token for user, signed with secret
// (HS256, no expiry): what an application backend would hand its clients.
func CentrifugoToken(secret []byte, user string) string {
	claims, _ := json.Marshal(struct {
		Sub string `json:"sub"`
	}{user})
	signed := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// centConnect is the connect command's body.
type centConnect struct {
	Token string `json:"token,omitempty"`
	Name  string `json:"name"`
}

func (k *centrifugoCodec) Start(c WireConn) (bool, error) {
	cmd := struct {
		ID      uint32      `json:"id"`
		Connect centConnect `json:"connect"`
	}{ID: centConnectID, Connect: centConnect{Name: "shoal-bench"}}
	if k.secret != nil {
		cmd.Connect.Token = CentrifugoToken(k.secret, "b"+strconv.Itoa(k.offset+c.Index()))
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return false, err
	}
	return false, c.Send(ws.OpText, b)
}

func (k *centrifugoCodec) Join(c WireConn, room string) error {
	k.rooms[c.Index()] = room
	b := fmt.Appendf(nil, `{"id":%d,"subscribe":{"channel":%q}}`, centSubscribeID, CentrifugoNamespace+":"+room)
	return c.Send(ws.OpText, b)
}

// Publish sends p's header as the publication's data, a JSON object
// {"t":due,"s":sender,"q":seq,"p":"xx..."} padded to len(p) bytes when
// len(p) leaves room for the fields.
func (k *centrifugoCodec) Publish(c WireConn, room string, p []byte) error {
	pl, ok := ParsePayload(p)
	if !ok {
		return fmt.Errorf("%w: a bench message needs %d bytes, got %d", ErrUsage, PayloadHeader, len(p))
	}
	id := k.ids[c.Index()].Add(1) - 1 + centFirstPubID
	b := make([]byte, 0, len(p)+96)
	b = fmt.Appendf(b, `{"id":%d,"publish":{"channel":%q,"data":`, id, CentrifugoNamespace+":"+room)
	b = AppendCentrifugoData(b, pl, len(p))
	b = append(b, "}}"...)
	return c.Send(ws.OpText, b)
}

// AppendCentrifugoData appends the JSON data object that carries pl,
// padded to size bytes when size leaves room for the fields.
func AppendCentrifugoData(b []byte, pl Payload, size int) []byte {
	start := len(b)
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, pl.Time, 10)
	b = append(b, `,"s":`...)
	b = strconv.AppendUint(b, pl.Sender, 10)
	b = append(b, `,"q":`...)
	b = strconv.AppendUint(b, pl.Seq, 10)
	b = append(b, `,"p":"`...)
	for pad := size - (len(b) - start) - len(`"}`); pad > 0; pad-- {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// ParseCentrifugoData reads a data object written by AppendCentrifugoData.
// It reads the fields in the order written, without allocating; anything
// else is handed to encoding/json.
func ParseCentrifugoData(p []byte) (Payload, bool) {
	var pl Payload
	s := scanText(p)
	s.lit(`{"t":`)
	t := s.uint()
	s.lit(`,"s":`)
	sender := s.uint()
	s.lit(`,"q":`)
	q := s.uint()
	if s.ok && t <= 1<<63-1 && len(s.rest) > 0 && (s.rest[0] == ',' || s.rest[0] == '}') {
		return Payload{Time: int64(t), Sender: sender, Seq: q}, true
	}
	var v struct {
		T *int64  `json:"t"`
		S *uint64 `json:"s"`
		Q *uint64 `json:"q"`
	}
	if json.Unmarshal(p, &v) != nil || v.T == nil || v.S == nil || v.Q == nil {
		return pl, false
	}
	return Payload{Time: *v.T, Sender: *v.S, Seq: *v.Q}, true
}

// centReply is a server message other than a publication.
type centReply struct {
	ID    uint32 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Push *struct {
		Channel    string          `json:"channel"`
		Pub        json.RawMessage `json:"pub"`
		Disconnect *struct {
			Code   int    `json:"code"`
			Reason string `json:"reason"`
		} `json:"disconnect"`
	} `json:"push"`
}

func (k *centrifugoCodec) Decode(c WireConn, op ws.OpCode, p []byte, now int64, sink EventSink) {
	if op != ws.OpText {
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "binary message from a JSON protocol server"}, now)
		return
	}
	for len(p) > 0 {
		var line []byte
		line, p, _ = bytes.Cut(p, []byte("\n"))
		if len(line) > 0 {
			k.decodeLine(c, line, now, sink)
		}
	}
}

// pubData is where a publication's data starts in a push, as Centrifugo
// writes it (data is the first field of pub).
var pubData = []byte(`"pub":{"data":`)

func (k *centrifugoCodec) decodeLine(c WireConn, line []byte, now int64, sink EventSink) {
	if bytes.Equal(line, centPing) {
		if err := c.Send(ws.OpText, centPing); err != nil {
			sink.Event(c, Event{Kind: EventUnexpected, Cause: "pong: " + err.Error()}, now)
		}
		return
	}
	// The hot path: a publication, read without decoding the whole push.
	if bytes.HasPrefix(line, []byte(`{"push":`)) {
		if i := bytes.Index(line, pubData); i >= 0 {
			if pl, ok := ParseCentrifugoData(line[i+len(pubData):]); ok {
				sink.Event(c, Event{Kind: EventMessage, Payload: pl}, now)
				return
			}
		}
	}
	var r centReply
	if err := json.Unmarshal(line, &r); err != nil {
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "not JSON: " + quoteClip(line)}, now)
		return
	}
	switch {
	case r.Push != nil && r.Push.Pub != nil:
		// A publication whose fields came in another order.
		var pub struct {
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(r.Push.Pub, &pub) == nil {
			if pl, ok := ParseCentrifugoData(pub.Data); ok {
				sink.Event(c, Event{Kind: EventMessage, Payload: pl}, now)
				return
			}
		}
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "publication without bench data: " + quoteClip(line)}, now)
	case r.Push != nil && r.Push.Disconnect != nil:
		sink.Event(c, Event{Kind: EventUnexpected, Cause: fmt.Sprintf("disconnect %d %s", r.Push.Disconnect.Code, r.Push.Disconnect.Reason)}, now)
	case r.Push != nil:
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "push " + quoteClip(line)}, now)
	case r.ID == centConnectID && r.Error != nil:
		sink.Event(c, Event{Kind: EventRefused, Cause: fmt.Sprintf("connect error %d %s", r.Error.Code, r.Error.Message)}, now)
	case r.ID == centConnectID:
		sink.Event(c, Event{Kind: EventReady}, now)
	case r.ID == centSubscribeID && r.Error != nil:
		sink.Event(c, Event{Kind: EventUnexpected, Cause: fmt.Sprintf("subscribe error %d %s", r.Error.Code, r.Error.Message)}, now)
	case r.ID == centSubscribeID:
		sink.Event(c, Event{Kind: EventJoined, Room: k.rooms[c.Index()]}, now)
	case r.ID >= centFirstPubID && r.Error != nil:
		sink.Event(c, Event{Kind: EventUnexpected, Cause: fmt.Sprintf("publish error %d %s", r.Error.Code, r.Error.Message)}, now)
	case r.ID >= centFirstPubID:
		// A publish acknowledged; its publication is what counts.
	default:
		sink.Event(c, Event{Kind: EventUnexpected, Cause: "reply " + quoteClip(line)}, now)
	}
}
