package fanout

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/service"
)

const waitLimit = 10 * time.Second

// rig is a fan-out service on a real NATS server, with the test playing
// shard "s1": it publishes client events and reads the commands sent back.
type rig struct {
	t     testing.TB
	shard *nats.Conn
	cmds  chan *nats.Msg
	h     *handler
}

// newRig runs the service with one worker, so commands come back in the
// order the events were published, whatever their connections.
func newRig(t testing.TB) *rig {
	t.Helper()
	srv := bustest.RunServer(t)
	svcConn := bustest.Connect(t, srv.ClientURL())
	r := &rig{t: t, shard: bustest.Connect(t, srv.ClientURL()), cmds: make(chan *nats.Msg, 256)}
	bustest.Subscribe(t, r.shard, bus.Subjects{}.Shard("s1"), r.cmds)
	if err := r.shard.Flush(); err != nil {
		t.Fatal(err)
	}

	h := New()
	r.h = h.(*handler)
	s, err := service.New(svcConn, service.Config{Name: "fanout", Workers: 1}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case <-time.After(waitLimit):
		t.Fatal("fanout service not ready")
	}
	return r
}

// event publishes a client event of conn; kv are extra header pairs.
func (r *rig) event(ev, conn string, data []byte, kv ...string) {
	r.t.Helper()
	m := nats.NewMsg(bus.Subjects{}.Service("fanout"))
	m.Header.Set(bus.HeaderEvent, ev)
	m.Header.Set(bus.HeaderConn, conn)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Header.Set(kv[i], kv[i+1])
	}
	m.Data = data
	if err := r.shard.PublishMsg(m); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) text(conn, msg string) {
	r.t.Helper()
	r.event(bus.EventMessage, conn, []byte(msg), bus.HeaderOpcode, bus.OpcodeText)
}

// cmd returns the next command the service sent to the shard.
func (r *rig) cmd(what string) *nats.Msg {
	r.t.Helper()
	return recv(r.t, r.cmds, what)
}

// join sends conn's join message, answers the join request as the shard
// does, with shardErr in Shoal-Error unless it is empty, and returns the
// request.
func (r *rig) join(conn, room, shardErr string) *nats.Msg {
	r.t.Helper()
	r.text(conn, "join "+room)
	req := r.cmd("join request of " + conn)
	if req.Reply == "" {
		r.t.Fatalf("join of %s sent without a reply subject: %v", conn, req.Header)
	}
	reply := nats.NewMsg(req.Reply)
	if shardErr != "" {
		reply.Header.Set(bus.HeaderError, shardErr)
	}
	if err := req.RespondMsg(reply); err != nil {
		r.t.Fatal(err)
	}
	return req
}

// wantJoined checks that the next command answers conn's join of room.
func (r *rig) wantJoined(conn, room string) {
	r.t.Helper()
	m := r.cmd("joined reply of " + conn)
	wantHeaders(r.t, m, bus.HeaderCmd, bus.CmdSend, bus.HeaderConn, conn, bus.HeaderOpcode, bus.OpcodeText)
	if got, want := string(m.Data), "joined "+room; got != want {
		r.t.Errorf("%s got %q, want %q", conn, got, want)
	}
}

// wantClose checks that the next command closes conn with code.
func (r *rig) wantClose(conn, code string) *nats.Msg {
	r.t.Helper()
	m := r.cmd("close of " + conn)
	wantHeaders(r.t, m, bus.HeaderCmd, bus.CmdClose, bus.HeaderConn, conn, bus.HeaderCloseCode, code)
	return m
}

func subscribe(t testing.TB, nc *nats.Conn, subject string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %v", what, waitLimit)
		panic("unreachable")
	}
}

func wantHeaders(t testing.TB, m *nats.Msg, kv ...string) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		if got := m.Header.Get(kv[i]); got != kv[i+1] {
			t.Errorf("%s: header %s = %q, want %q", m.Subject, kv[i], got, kv[i+1])
		}
	}
}

func TestJoinThenFanOut(t *testing.T) {
	r := newRig(t)
	room := subscribe(t, r.shard, bus.Subjects{}.Room("bench.r"))

	r.event(bus.EventOpen, "s1.1", nil, bus.HeaderPath, "/ws/fanout")
	req := r.join("s1.1", "r", "")
	wantHeaders(t, req, bus.HeaderCmd, bus.CmdJoin, bus.HeaderConn, "s1.1", bus.HeaderRoom, "bench.r")
	r.wantJoined("s1.1", "r")

	// Later messages go to the room verbatim, a join text included.
	payload := make([]byte, 24)
	for i := range payload {
		payload[i] = byte(255 - i)
	}
	sent := []struct {
		op     string
		data   []byte
		header string
	}{
		{bus.OpcodeBinary, payload, bus.OpcodeBinary},
		{bus.OpcodeText, []byte("join other"), bus.OpcodeText},
		{"", []byte("no opcode is text"), bus.OpcodeText},
		{bus.OpcodeBinary, nil, bus.OpcodeBinary},
	}
	for i, s := range sent {
		if s.op == "" {
			r.event(bus.EventMessage, "s1.1", s.data)
		} else {
			r.event(bus.EventMessage, "s1.1", s.data, bus.HeaderOpcode, s.op)
		}
		m := recv(t, room, "room message")
		wantHeaders(t, m, bus.HeaderOpcode, s.header)
		if !bytes.Equal(m.Data, s.data) {
			t.Errorf("message %d: room got %q, want %q", i, m.Data, s.data)
		}
	}

	// Members of the room do not answer: the shard heard nothing but the join.
	select {
	case m := <-r.cmds:
		t.Errorf("unexpected command %v", m.Header)
	default:
	}
}

func TestJoinedOnlyAfterShardAgreed(t *testing.T) {
	r := newRig(t)
	room := subscribe(t, r.shard, bus.Subjects{}.Room("bench.x"))

	// A refused join earns no "joined": the answer waits for the reply.
	r.join("s1.2", "x", "disk on fire")
	m := r.wantClose("s1.2", "1011")
	wantHeaders(t, m, bus.HeaderCloseReason, reasonJoining)
	// Its messages in flight are dropped, neither published nor closed again.
	r.text("s1.2", "late")
	// A client that left before the join answer is not closed either.
	r.join("s1.3", "x", bus.ErrTextNoConn)
	r.text("s1.3", "late")

	// The next command is for the next connection: the ones above sent nothing.
	r.text("s1.4", "hello")
	r.wantClose("s1.4", "1008")
	select {
	case m := <-room:
		t.Errorf("room got %q", m.Data)
	default:
	}
}

func TestBadFirstMessage(t *testing.T) {
	r := newRig(t)
	cases := []struct {
		name string
		op   string
		data string
	}{
		{"not a join", bus.OpcodeText, "hello"},
		{"binary join", bus.OpcodeBinary, "join r"},
		{"no room", bus.OpcodeText, "join "},
		{"no space", bus.OpcodeText, "joinr"},
		{"upper case", bus.OpcodeText, "JOIN r"},
		{"space in room", bus.OpcodeText, "join a b"},
		{"bad byte", bus.OpcodeText, "join r!"},
		{"trailing newline", bus.OpcodeText, "join r\n"},
		{"room of 65", bus.OpcodeText, "join " + strings.Repeat("a", 65)},
		{"empty", bus.OpcodeText, ""},
	}
	for i, c := range cases {
		conn := "s1.1" + strings.Repeat("0", i)
		r.event(bus.EventMessage, conn, []byte(c.data), bus.HeaderOpcode, c.op)
		m := r.wantClose(conn, "1008")
		if got := m.Header.Get(bus.HeaderCloseReason); got != reasonFirst {
			t.Errorf("%s: reason %q", c.name, got)
		}
	}

	// Names at the edges of the rules are accepted; dots map to '~' so every
	// room is one valid token on the bus.
	for _, c := range []struct{ room, bus string }{
		{strings.Repeat("z", 64), "bench." + strings.Repeat("z", 64)},
		{"A-z_0.9", "bench.A-z_0~9"},
		{"..", "bench.~~"},
	} {
		req := r.join("s1.7", c.room, "")
		wantHeaders(t, req, bus.HeaderRoom, c.bus)
		r.wantJoined("s1.7", c.room)
		r.event(bus.EventClose, "s1.7", nil, bus.HeaderCloseCode, "1000")
	}
}

func TestCloseForgetsConnection(t *testing.T) {
	r := newRig(t)
	r.join("s1.5", "r", "")
	r.wantJoined("s1.5", "r")
	r.event(bus.EventClose, "s1.5", nil, bus.HeaderCloseCode, "1001")

	// A new connection with the same id starts over: it must join first.
	r.text("s1.5", "payload")
	r.wantClose("s1.5", "1008")
	r.event(bus.EventClose, "s1.5", nil, bus.HeaderCloseCode, "1008")
	req := r.join("s1.5", "q", "")
	wantHeaders(t, req, bus.HeaderRoom, "bench.q")
	r.wantJoined("s1.5", "q")
	r.event(bus.EventClose, "s1.5", nil)

	waitEmpty(t, r.h)
}

// waitEmpty polls until h holds no connection: close events are handled
// after the commands the test waited for.
func waitEmpty(t testing.TB, h *handler) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		n := 0
		h.rooms.Range(func(_, _ any) bool { n++; return true })
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still held", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestShardDownForgetsItsConnections(t *testing.T) {
	h := New().(*handler)
	if _, ok := service.Handler(h).(service.ShardWatcher); !ok {
		t.Fatal("handler is not a ShardWatcher")
	}
	for _, id := range []string{"s1.1", "s1.2", "s10.1", "s2.1"} {
		h.rooms.Store(id, "bench.r")
	}
	h.ShardDown("s1")
	var left []string
	h.rooms.Range(func(k, _ any) bool { left = append(left, k.(string)); return true })
	if len(left) != 2 || !(left[0] == "s10.1" || left[1] == "s10.1") {
		t.Errorf("after ShardDown(s1): %v, want s10.1 and s2.1", left)
	}
}
