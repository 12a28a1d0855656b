package chat

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// codes are the documented error codes.
var codes = map[string]bool{
	CodeBadJSON: true, CodeUnknownType: true, CodeBadRequest: true, CodeUnauthorized: true,
	CodeBadCredentials: true, CodeUserTaken: true, CodeNoSuchRoom: true, CodeNotMember: true,
	CodeTooLong: true, CodeRateLimited: true, CodeUnavailable: true,
}

// replies are the types a request may be answered with.
var replies = map[string]bool{
	TypeWelcome: true, TypeJoined: true, TypeSent: true, TypeLeft: true, TypeMembers: true,
	TypeRooms: true, TypeHistory: true, TypePong: true, TypeError: true,
}

func TestDecode(t *testing.T) {
	for _, c := range []struct {
		in, typ, code, id string
	}{
		{`{"type":"ping"}`, "ping", "", ""},
		{` {"type":"say","room":"r","text":"hi","id":"a"}`, "say", "", `"a"`},
		{`{"type":"join","room":"r","after":5,"epoch":"e","limit":3,"id":-2.5}`, "join", "", "-2.5"},
		{`{"type":"ping","id":null}`, "ping", "", ""},
		{`{"type":"ping","unknown":[1,{"x":2}]}`, "ping", "", ""},
		{``, "", CodeBadJSON, ""},
		{`[]`, "", CodeBadJSON, ""},
		{`{`, "", CodeBadJSON, ""},
		{`{"type":"ping"}{}`, "", CodeBadJSON, ""},
		{`{"type":"ping","id":1`, "", CodeBadJSON, ""},
		{`{}`, "", CodeBadRequest, ""},
		{`{"type":""}`, "", CodeBadRequest, ""},
		{`{"type":true,"id":3}`, "", CodeBadRequest, "3"},
		{`{"type":"history","after":"5","id":4}`, "history", CodeBadRequest, "4"},
		{`{"type":"history","limit":1e2}`, "history", CodeBadRequest, ""},
		{`{"type":"history","limit":99999999999999999999}`, "history", CodeBadRequest, ""},
		{`{"type":"ping","id":true}`, "ping", CodeBadRequest, ""},
		{`{"type":"ping","id":"x","id":{}}`, "ping", CodeBadRequest, ""},
		{`{"type":"Ping"}`, "Ping", CodeUnknownType, ""},
	} {
		req, err := decode([]byte(c.in))
		code := ""
		if err != nil {
			code = err.code
		}
		if code != c.code || string(req.ID) != c.id || (code == "" || code == CodeUnknownType) && req.Type != c.typ {
			t.Errorf("decode(%s) = type %q id %s error %q, want type %q id %s error %q", c.in, req.Type, req.ID, code, c.typ, c.id, c.code)
		}
	}
}

// TestAppendString checks the hand-written JSON strings against
// encoding/json: both must decode to the same text.
func TestAppendString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `"quoted" \back\slash/`, "tab\tnew\nline\rret", "\x00\x01\x1f\x7f",
		"ünïcødé ✓ 🎉", "bad \xff utf8 \xc3", "line\u2028para\u2029", "<script>&amp;</script>",
	} {
		got := appendString(nil, s)
		var a, b string
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("appendString(%q) = %s: not JSON: %v", s, got, err)
		}
		std, _ := json.Marshal(s)
		_ = json.Unmarshal(std, &b)
		if a != b {
			t.Errorf("appendString(%q) decodes to %q, encoding/json's to %q", s, a, b)
		}
	}
	m := message{Room: "r", User: "u", Text: "t\"x", Seq: 7, Prev: 3, TS: "2026-01-02T03:04:05.678Z"}
	var f frame
	if err := json.Unmarshal(appendMessage(nil, &m, "42"), &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeMessage || f.Room != "r" || f.User != "u" || f.Text != `t"x` || f.Seq != 7 || f.Prev != 3 || f.TS != m.TS || f.Epoch != "42" {
		t.Fatalf("appendMessage decodes to %+v", f)
	}
}

// seeds are inputs for the fuzz tests: every request, and broken ones.
var seeds = []string{
	`{"type":"register","user":"fz","password":"password1","id":1}`,
	`{"type":"login","user":"fz","password":"password1","id":"x"}`,
	`{"type":"join","room":"lobby","id":2}`,
	`{"type":"join","room":"lobby","after":0,"epoch":"1","limit":5}`,
	`{"type":"say","room":"lobby","text":"hello","id":3}`,
	`{"type":"say","room":"lobby","text":"` + strings.Repeat("x", 5000) + `"}`,
	`{"type":"leave","room":"lobby"}`,
	`{"type":"who","room":"lobby"}`,
	`{"type":"rooms"}`,
	`{"type":"history","room":"lobby","before":10,"limit":2}`,
	`{"type":"history","room":"lobby","after":1,"before":2}`,
	`{"type":"ping","id":1e400}`,
	`{"type":"nope"}`,
	`{"type":"say","room":"no such","text":"x"}`,
	`{"type":5}`, `[`, `{}`, `null`, "\x00", `{"type":"say","room":"lobby","text":"\ud800"}`,
}

// FuzzDecode checks that the decoder never panics and that every input is
// a known request or an error of a documented code.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decode(data)
		if err != nil {
			if !codes[err.code] {
				t.Fatalf("decode(%q): undocumented code %q", data, err.code)
			}
			return
		}
		if _, ok := known[req.Type]; !ok {
			t.Fatalf("decode(%q): accepted unknown type %q", data, req.Type)
		}
		if len(req.ID) > 0 && validID(req.ID) == nil {
			t.Fatalf("decode(%q): accepted id %s", data, req.ID)
		}
	})
}

// fakeShard plays a shard on the bus: it answers join requests and
// collects what the service sends to each connection.
type fakeShard struct {
	nc    *nats.Conn
	mu    sync.Mutex
	sends map[string]chan []byte
	users map[string]string
	n     atomic.Uint64
}

func newFakeShard(t testing.TB, r *rig) *fakeShard {
	fs := &fakeShard{nc: r.connect(), sends: make(map[string]chan []byte), users: make(map[string]string)}
	sub, err := fs.nc.Subscribe(bus.Subjects{}.Shard("f1"), func(m *nats.Msg) {
		if err := bus.Expand(m); err != nil {
			t.Errorf("shard command: %v", err)
			return
		}
		switch m.Header.Get(bus.HeaderCmd) {
		case bus.CmdJoin:
			_ = m.RespondMsg(&nats.Msg{Header: nats.Header{}})
		case bus.CmdSend:
			fs.mu.Lock()
			ch := fs.sends[m.Header.Get(bus.HeaderConn)]
			fs.mu.Unlock()
			if ch != nil {
				ch <- m.Data
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := fs.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return fs
}

// conn makes a connection of user (anonymous for "") and returns its id
// and the channel of what the service sends to it.
func (fs *fakeShard) conn(user string) (string, <-chan []byte) {
	id := "f1." + strconv.FormatUint(fs.n.Add(1), 10)
	ch := make(chan []byte, 1024)
	fs.mu.Lock()
	fs.sends[id] = ch
	fs.users[id] = user
	fs.mu.Unlock()
	return id, ch
}

// send publishes data as a message event of connection id.
func (fs *fakeShard) send(t testing.TB, id string, data []byte) {
	m := nats.NewMsg(bus.Subjects{}.Service("chat"))
	m.Header.Set(bus.HeaderEvent, bus.EventMessage)
	m.Header.Set(bus.HeaderConn, id)
	m.Header.Set(bus.HeaderOpcode, bus.OpcodeText)
	fs.mu.Lock()
	user := fs.users[id]
	fs.mu.Unlock()
	if user != "" {
		m.Header.Set(bus.HeaderUser, user)
	}
	m.Data = data
	if err := fs.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}

// message sends data as a message event of a new connection of user and
// returns the channel of what is sent back to it.
func (fs *fakeShard) message(t testing.TB, user string, data []byte) <-chan []byte {
	id, ch := fs.conn(user)
	fs.send(t, id, data)
	return ch
}

// FuzzRequest sends every input to a running chat service as a message of
// a logged-in connection and of an anonymous one: each must be answered,
// once, with a reply type of the protocol, and errors with a documented
// code.
func FuzzRequest(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	r := newRig(f, 1, 0)
	fs := newFakeShard(f, r)
	// The room of the seeds exists, so says and leaves get past it.
	<-fs.message(f, "fz", []byte(`{"type":"join","room":"lobby"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, user := range []string{"fz", ""} {
			ch := fs.message(t, user, data)
			var got []byte
			select {
			case got = <-ch:
			case <-time.After(waitLimit):
				t.Fatalf("no answer to %q (user %q)", data, user)
			}
			var rep struct {
				Type string `json:"type"`
				Code string `json:"code"`
			}
			if err := json.Unmarshal(got, &rep); err != nil {
				t.Fatalf("answer to %q is not JSON: %s", data, got)
			}
			if !replies[rep.Type] || rep.Type == TypeError && !codes[rep.Code] {
				t.Fatalf("answer to %q: %s", data, got)
			}
			select {
			case more := <-ch:
				t.Fatalf("second answer to %q: %s", data, more)
			case <-time.After(time.Millisecond):
			}
		}
	})
}
