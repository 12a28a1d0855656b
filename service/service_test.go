package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/service"
)

func TestNewRejectsBadConfig(t *testing.T) {
	nc, _ := testBus(t)
	h := service.Funcs{}
	cases := []struct {
		name string
		nc   *nats.Conn
		cfg  service.Config
		h    service.Handler
	}{
		{"no name", nc, service.Config{}, h},
		{"dotted name", nc, service.Config{Name: "a.b"}, h},
		{"wildcard prefix", nc, service.Config{Name: "x", Prefix: "a.*"}, h},
		{"queue with space", nc, service.Config{Name: "x", Queue: "a b"}, h},
		{"negative workers", nc, service.Config{Name: "x", Workers: -1}, h},
		{"negative timeout", nc, service.Config{Name: "x", RequestTimeout: -time.Second}, h},
		{"nil conn", nil, service.Config{Name: "x"}, h},
		{"nil handler", nc, service.Config{Name: "x"}, nil},
	}
	for _, c := range cases {
		if _, err := service.New(c.nc, c.cfg, c.h); !errors.Is(err, service.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", c.name, err)
		}
	}
}

type seen struct {
	ev     string
	id     string
	shard  string
	user   string
	remote string
	path   string
	op     service.Opcode
	data   string
	code   int
	reason string
}

func recorder(ch chan<- seen) service.Funcs {
	return service.Funcs{
		OnOpen: func(c *service.Conn) error {
			ch <- seen{ev: "open", id: c.ID(), shard: c.Shard(), user: c.User(), remote: c.Remote(), path: c.Path()}
			return nil
		},
		OnMessage: func(c *service.Conn, op service.Opcode, data []byte) {
			ch <- seen{ev: "message", id: c.ID(), user: c.User(), op: op, data: string(data)}
		},
		OnClose: func(c *service.Conn, code int, reason string) {
			ch <- seen{ev: "close", id: c.ID(), code: code, reason: reason}
		},
	}
}

func TestEventsReachHandler(t *testing.T) {
	snc, tnc := testBus(t)
	ch := make(chan seen, 16)
	runService(t, snc, service.Config{Name: "rec"}, recorder(ch))

	event(t, tnc, "rec", bus.EventOpen, "s1.7", nil,
		bus.HeaderUser, "ann", bus.HeaderRemote, "10.0.0.1:5555", bus.HeaderPath, "/rec?x=1")
	event(t, tnc, "rec", bus.EventMessage, "s1.7", []byte("hi"))
	event(t, tnc, "rec", bus.EventMessage, "s1.7", []byte{0, 1}, bus.HeaderOpcode, bus.OpcodeBinary)
	event(t, tnc, "rec", bus.EventMessage, "s1.7", []byte("t"), bus.HeaderOpcode, bus.OpcodeText, bus.HeaderUser, "bob")
	// The compact form, as shards publish message events, in order with the rest.
	compact(t, tnc, "rec", bus.AppendCompactMessage(nil, "s1.7", "", false, []byte("c")))
	compact(t, tnc, "rec", bus.AppendCompactMessage(nil, "s1.7", "cy", true, []byte{2}))
	event(t, tnc, "rec", bus.EventClose, "s1.7", nil, bus.HeaderCloseCode, "4000", bus.HeaderCloseReason, "bye")

	want := []seen{
		{ev: "open", id: "s1.7", shard: "s1", user: "ann", remote: "10.0.0.1:5555", path: "/rec?x=1"},
		{ev: "message", id: "s1.7", op: service.Text, data: "hi"},
		{ev: "message", id: "s1.7", op: service.Binary, data: "\x00\x01"},
		{ev: "message", id: "s1.7", user: "bob", op: service.Text, data: "t"},
		{ev: "message", id: "s1.7", op: service.Text, data: "c"},
		{ev: "message", id: "s1.7", user: "cy", op: service.Binary, data: "\x02"},
		{ev: "close", id: "s1.7", code: 4000, reason: "bye"},
	}
	for i, w := range want {
		if got := recv(t, ch, "event "+itoa(i)); got != w {
			t.Errorf("event %d = %+v, want %+v", i, got, w)
		}
	}
	// A close without a code is reported as 1005, "no status received".
	event(t, tnc, "rec", bus.EventClose, "s1.8", nil)
	if got, w := recv(t, ch, "close"), (seen{ev: "close", id: "s1.8", code: 1005}); got != w {
		t.Errorf("close = %+v, want %+v", got, w)
	}
}

func TestOpenErrorClosesConnection(t *testing.T) {
	snc, tnc := testBus(t)
	cmds := fakeShard(t, tnc, "", "s1")
	runService(t, snc, service.Config{Name: "gate"}, service.Funcs{
		OnOpen: func(c *service.Conn) error {
			switch c.Path() {
			case "/deny":
				return fmt.Errorf("checked: %w", &service.CloseError{Code: 4003, Reason: "forbidden"})
			case "/broken":
				return errors.New("database down")
			}
			return nil
		},
	})

	event(t, tnc, "gate", bus.EventOpen, "s1.1", nil, bus.HeaderPath, "/deny")
	m := recv(t, cmds, "close command")
	wantHeaders(t, m, bus.HeaderCmd, bus.CmdClose, bus.HeaderConn, "s1.1",
		bus.HeaderCloseCode, "4003", bus.HeaderCloseReason, "forbidden")

	event(t, tnc, "gate", bus.EventOpen, "s1.2", nil, bus.HeaderPath, "/broken")
	m = recv(t, cmds, "close command")
	wantHeaders(t, m, bus.HeaderCmd, bus.CmdClose, bus.HeaderConn, "s1.2", bus.HeaderCloseCode, "1011")

	// An accepted open sends nothing: the next command seen is the next refusal.
	event(t, tnc, "gate", bus.EventOpen, "s1.3", nil, bus.HeaderPath, "/ok")
	event(t, tnc, "gate", bus.EventOpen, "s1.3", nil, bus.HeaderPath, "/deny")
	m = recv(t, cmds, "close command")
	wantHeaders(t, m, bus.HeaderConn, "s1.3", bus.HeaderCloseCode, "4003")
}

func TestCommands(t *testing.T) {
	snc, tnc := testBus(t)
	cmds := fakeShard(t, tnc, "", "s1")
	room := subscribe(t, tnc, bus.Subjects{}.Room("team.general"))
	all := subscribe(t, tnc, bus.Subjects{}.All())
	s := runService(t, snc, service.Config{Name: "cmd"}, service.Funcs{})

	c, err := s.Conn("s1.42")
	if err != nil {
		t.Fatal(err)
	}
	if c.ID() != "s1.42" || c.Shard() != "s1" {
		t.Fatalf("Conn = %q on %q", c.ID(), c.Shard())
	}
	if err := c.Send(service.Binary, []byte{9}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, cmds, "send")
	wantHeaders(t, m, bus.HeaderCmd, bus.CmdSend, bus.HeaderConn, "s1.42", bus.HeaderOpcode, bus.OpcodeBinary)
	if string(m.Data) != "\x09" {
		t.Errorf("send payload %q", m.Data)
	}
	if err := c.Leave("team.general"); err != nil {
		t.Fatal(err)
	}
	wantHeaders(t, recv(t, cmds, "leave"), bus.HeaderCmd, bus.CmdLeave, bus.HeaderConn, "s1.42", bus.HeaderRoom, "team.general")
	if err := c.Identify("u-1"); err != nil {
		t.Fatal(err)
	}
	wantHeaders(t, recv(t, cmds, "identify"), bus.HeaderCmd, bus.CmdIdentify, bus.HeaderConn, "s1.42", bus.HeaderUser, "u-1")
	if err := c.Close(0, "done\r\nInjected: 1"); err != nil {
		t.Fatal(err)
	}
	wantHeaders(t, recv(t, cmds, "close"), bus.HeaderCmd, bus.CmdClose, bus.HeaderCloseCode, "1000",
		bus.HeaderCloseReason, "done  Injected: 1")
	if err := c.Close(3000, strings.Repeat("é", 100)); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, cmds, "close").Header.Get(bus.HeaderCloseReason); len(r) != 122 || r != strings.Repeat("é", 61) {
		t.Errorf("long reason cut to %d bytes", len(r))
	}

	if err := s.Publish("team.general", service.Text, []byte("to room")); err != nil {
		t.Fatal(err)
	}
	m = recv(t, room, "room message")
	wantHeaders(t, m, bus.HeaderOpcode, bus.OpcodeText)
	if string(m.Data) != "to room" {
		t.Errorf("room payload %q", m.Data)
	}
	if err := s.Broadcast(service.Binary, []byte("to all")); err != nil {
		t.Fatal(err)
	}
	m = recv(t, all, "broadcast")
	wantHeaders(t, m, bus.HeaderOpcode, bus.OpcodeBinary)
	if string(m.Data) != "to all" {
		t.Errorf("broadcast payload %q", m.Data)
	}

	// Bad arguments fail before anything is published.
	checks := []struct {
		name string
		err  error
		want error
	}{
		{"send opcode 9", c.Send(9, nil), service.ErrInvalidOpcode},
		{"publish bad room", s.Publish("a..b", service.Text, nil), service.ErrInvalidRoom},
		{"publish opcode 0", s.Publish("a", 0, nil), service.ErrInvalidOpcode},
		{"broadcast opcode 8", s.Broadcast(8, nil), service.ErrInvalidOpcode},
		{"leave bad room", c.Leave("x."), service.ErrInvalidRoom},
		{"join bad room", c.Join(context.Background(), "a b"), service.ErrInvalidRoom},
		{"close 1005", c.Close(1005, ""), service.ErrInvalidCloseCode},
		{"close 999", c.Close(999, ""), service.ErrInvalidCloseCode},
		{"identify newline", c.Identify("a\nb"), service.ErrInvalidUser},
	}
	for _, ch := range checks {
		if !errors.Is(ch.err, ch.want) {
			t.Errorf("%s: err = %v, want %v", ch.name, ch.err, ch.want)
		}
	}
	for _, id := range []string{"", "s1", "s1.", ".1", "s.1.2", "s1.x"} {
		if _, err := s.Conn(id); !errors.Is(err, service.ErrInvalidConn) {
			t.Errorf("Conn(%q): err = %v, want ErrInvalidConn", id, err)
		}
	}
	select {
	case m := <-cmds:
		t.Errorf("unexpected command %v", m.Header)
	default:
	}
}

func TestJoin(t *testing.T) {
	snc, tnc := testBus(t)
	s := runService(t, snc, service.Config{Name: "join", RequestTimeout: 200 * time.Millisecond}, service.Funcs{})

	// The fake shard answers by the room name.
	reqs := make(chan *nats.Msg, 16)
	sub, err := tnc.Subscribe(bus.Subjects{}.Shard("s1"), func(m *nats.Msg) {
		reqs <- m
		reply := nats.NewMsg(m.Reply)
		switch m.Header.Get(bus.HeaderRoom) {
		case "gone":
			reply.Header.Set(bus.HeaderError, bus.ErrTextNoConn)
		case "bad":
			reply.Header.Set(bus.HeaderError, bus.ErrTextInvalidRoom)
		case "odd":
			reply.Header.Set(bus.HeaderError, "disk on fire")
		case "silent":
			return
		}
		_ = m.RespondMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := tnc.Flush(); err != nil {
		t.Fatal(err)
	}

	c, err := s.Conn("s1.5")
	if err != nil {
		t.Fatal(err)
	}
	// Answered joins get a generous deadline of their own, so a loaded
	// machine does not turn them into timeouts.
	ctx, cancelAll := context.WithTimeout(context.Background(), waitLimit)
	defer cancelAll()
	if err := c.Join(ctx, "lobby"); err != nil {
		t.Fatalf("join lobby: %v", err)
	}
	m := recv(t, reqs, "join request")
	wantHeaders(t, m, bus.HeaderCmd, bus.CmdJoin, bus.HeaderConn, "s1.5", bus.HeaderRoom, "lobby")
	if m.Reply == "" {
		t.Error("join sent without a reply subject")
	}

	if err := c.Join(ctx, "gone"); !errors.Is(err, service.ErrNoConnection) {
		t.Errorf("join gone: err = %v, want ErrNoConnection", err)
	}
	if err := c.Join(ctx, "bad"); !errors.Is(err, service.ErrInvalidRoom) {
		t.Errorf("join bad: err = %v, want ErrInvalidRoom", err)
	}
	if err := c.Join(ctx, "odd"); !errors.Is(err, service.ErrCommand) || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("join odd: err = %v, want ErrCommand with the shard's message", err)
	}
	// Without a deadline of its own, Join uses Config.RequestTimeout.
	if err := c.Join(context.Background(), "silent"); !errors.Is(err, service.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("join silent: err = %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Join(cctx, "lobby"); errors.Is(err, service.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Errorf("join cancelled: err = %v, want Canceled, not ErrTimeout", err)
	}

	other, err := s.Conn("s2.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Join(ctx, "lobby"); !errors.Is(err, service.ErrShardGone) {
		t.Errorf("join on a shard nobody runs: err = %v, want ErrShardGone", err)
	}
}

func TestPerConnectionOrder(t *testing.T) {
	const conns, msgs = 50, 200
	snc, tnc := testBus(t)

	var mu sync.Mutex
	got := make(map[string][]int, conns)
	total := 0
	s := runService(t, snc, service.Config{Name: "order", Workers: 4}, service.Funcs{
		OnMessage: func(c *service.Conn, _ service.Opcode, data []byte) {
			n, err := strconv.Atoi(string(data))
			if err != nil {
				t.Errorf("payload %q", data)
			}
			mu.Lock()
			got[c.ID()] = append(got[c.ID()], n)
			total++
			mu.Unlock()
		},
	})

	// Interleave connections so that order within a connection is all that holds.
	for i := range msgs {
		for c := range conns {
			event(t, tnc, "order", bus.EventMessage, "s1."+itoa(c), []byte(itoa(i)))
		}
	}
	waitFor(t, "all messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return total == conns*msgs
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != conns {
		t.Fatalf("%d connections seen, want %d", len(got), conns)
	}
	for id, seq := range got {
		for i, n := range seq {
			if n != i {
				t.Fatalf("%s: message %d is %d: order broken", id, i, n)
			}
		}
	}
	if st := s.Stats(); st.Events != conns*msgs || st.Malformed != 0 || st.Dropped != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestQueueGroupSharesEvents(t *testing.T) {
	const events = 200
	snc, tnc := testBus(t)
	var mu sync.Mutex
	handled := make(map[string][]int)
	perInstance := [2]int{}
	mk := func(inst int) service.Funcs {
		return service.Funcs{OnOpen: func(c *service.Conn) error {
			mu.Lock()
			handled[c.ID()] = append(handled[c.ID()], inst)
			perInstance[inst]++
			mu.Unlock()
			return nil
		}}
	}
	// Each instance on its own connection, as separate processes would be.
	runService(t, snc, service.Config{Name: "q"}, mk(0))
	runService(t, tnc, service.Config{Name: "q"}, mk(1))

	for i := range events {
		event(t, tnc, "q", bus.EventOpen, "s1."+itoa(i), nil)
	}
	waitFor(t, "all opens", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return perInstance[0]+perInstance[1] >= events
	})
	// Give a duplicate delivery a chance to show up before counting.
	if err := tnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != events {
		t.Errorf("%d connections handled, want %d", len(handled), events)
	}
	for id, insts := range handled {
		if len(insts) != 1 {
			t.Errorf("%s handled %d times (instances %v)", id, len(insts), insts)
		}
	}
	if perInstance[0] == 0 || perInstance[1] == 0 {
		t.Errorf("events per instance %v: the queue group did not share", perInstance)
	}
}

func TestMalformedEventsAreSkipped(t *testing.T) {
	snc, tnc := testBus(t)
	ch := make(chan seen, 16)
	s := runService(t, snc, service.Config{Name: "bad"}, recorder(ch))

	event(t, tnc, "bad", bus.EventMessage, "", []byte("no conn"))
	event(t, tnc, "bad", bus.EventMessage, "nodot", []byte("bad conn"))
	event(t, tnc, "bad", "reopen", "s1.1", nil)
	event(t, tnc, "bad", "", "s1.1", nil)
	event(t, tnc, "bad", bus.EventMessage, "s1.1", []byte("x"), bus.HeaderOpcode, "ping")
	compact(t, tnc, "bad", []byte("mt\x04s1.1"))                                   // no user length
	compact(t, tnc, "bad", bus.AppendCompactMessage(nil, "nodot", "", false, nil)) // bad conn id
	compact(t, tnc, "bad", bus.AppendCompactSend(nil, "s1.1", false, nil))         // a command, not an event
	event(t, tnc, "bad", bus.EventMessage, "s1.1", []byte("fine"))

	got := recv(t, ch, "the well-formed event")
	if got.data != "fine" {
		t.Errorf("handler got %+v, want only the well-formed message", got)
	}
	waitFor(t, "malformed count", func() bool { return s.Stats().Malformed == 8 })
	if st := s.Stats(); st.Events != 1 {
		t.Errorf("Stats = %+v, want 1 event", st)
	}
}

func TestRunDrainsInFlight(t *testing.T) {
	snc, tnc := testBus(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	finished := make(chan struct{})
	s, err := service.New(snc, service.Config{Name: "drain"}, service.Funcs{
		OnMessage: func(*service.Conn, service.Opcode, []byte) {
			close(entered)
			<-release
			close(finished)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	recv(t, s.Ready(), "ready")
	if err := s.Run(ctx); !errors.Is(err, service.ErrRunning) {
		t.Errorf("second Run: err = %v, want ErrRunning", err)
	}

	event(t, tnc, "drain", bus.EventMessage, "s1.1", []byte("slow"))
	recv(t, entered, "handler entered")
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a handler was running", err)
	default:
	}
	close(release)
	if err := recv(t, done, "Run to return"); err != nil {
		t.Errorf("Run: %v", err)
	}
	select {
	case <-finished:
	default:
		t.Error("Run returned before the handler finished")
	}
	done <- nil // for the cleanup
}

// watch records ShardWatcher calls.
type watch struct {
	service.Funcs
	ups, downs chan string
}

func (w *watch) ShardUp(shard string)   { w.ups <- shard }
func (w *watch) ShardDown(shard string) { w.downs <- shard }

func newWatch() *watch { return &watch{ups: make(chan string, 16), downs: make(chan string, 16)} }

func TestShardDownWhenHeartbeatsStop(t *testing.T) {
	snc, tnc := testBus(t)
	w := newWatch()
	runService(t, snc, service.Config{Name: "w"}, w)

	const beat = 20 * time.Millisecond
	life(t, tnc, "s1", bus.LifeUp, beat)
	if got := recv(t, w.ups, "ShardUp"); got != "s1" {
		t.Fatalf("ShardUp(%q), want s1", got)
	}
	// No heartbeat follows: after 3 intervals the shard counts as gone.
	if got := recv(t, w.downs, "ShardDown"); got != "s1" {
		t.Fatalf("ShardDown(%q), want s1", got)
	}
	// Coming back is a new ShardUp.
	life(t, tnc, "s1", bus.LifeHeartbeat, time.Minute)
	if got := recv(t, w.ups, "ShardUp after return"); got != "s1" {
		t.Fatalf("ShardUp(%q), want s1", got)
	}
}

func TestShardDownWhenShardSaysDown(t *testing.T) {
	snc, tnc := testBus(t)
	w := newWatch()
	runService(t, snc, service.Config{Name: "w"}, w)

	life(t, tnc, "s1", bus.LifeUp, time.Minute)
	life(t, tnc, "s2", bus.LifeUp, time.Minute)
	ups := map[string]bool{recv(t, w.ups, "ShardUp"): true, recv(t, w.ups, "ShardUp"): true}
	if !ups["s1"] || !ups["s2"] {
		t.Fatalf("ShardUp calls %v, want s1 and s2", ups)
	}
	// Heartbeats of a known shard announce nothing new. The watcher takes
	// records in order, so by the time ShardDown(s2) is seen, any ShardUp
	// these could cause has been made.
	for range 5 {
		life(t, tnc, "s1", bus.LifeHeartbeat, time.Minute)
		life(t, tnc, "s2", bus.LifeHeartbeat, time.Minute)
	}
	life(t, tnc, "s2", bus.LifeDown, time.Minute)
	if got := recv(t, w.downs, "ShardDown"); got != "s2" {
		t.Fatalf("ShardDown(%q), want s2", got)
	}
	select {
	case s := <-w.ups:
		t.Errorf("extra ShardUp(%q) for a heartbeat", s)
	default:
	}
	// A record whose body names another shard than its subject is ignored,
	// and so is garbage.
	if err := tnc.Publish(bus.Subjects{}.Life("s1"), []byte(`{"shard":"s9","state":"down"}`)); err != nil {
		t.Fatal(err)
	}
	if err := tnc.Publish(bus.Subjects{}.Life("s1"), []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	life(t, tnc, "s1", bus.LifeDown, time.Minute)
	if got := recv(t, w.downs, "ShardDown"); got != "s1" {
		t.Fatalf("ShardDown(%q), want s1", got)
	}
}

// TestShardRestartIsDownThenUp checks that a shard id heard in a new life
// before its silence was noticed (a quick restart) ends the old life.
func TestShardRestartIsDownThenUp(t *testing.T) {
	snc, tnc := testBus(t)
	w := newWatch()
	runService(t, snc, service.Config{Name: "w"}, w)

	lifeOf(t, tnc, "s1", 10, bus.LifeUp, time.Minute)
	if got := recv(t, w.ups, "ShardUp"); got != "s1" {
		t.Fatalf("ShardUp(%q), want s1", got)
	}
	lifeOf(t, tnc, "s1", 10, bus.LifeHeartbeat, time.Minute)
	// A new "up" under the same id: the old life is down.
	lifeOf(t, tnc, "s1", 10, bus.LifeUp, time.Minute)
	if got := recv(t, w.downs, "ShardDown on a second up"); got != "s1" {
		t.Fatalf("ShardDown(%q), want s1", got)
	}
	if got := recv(t, w.ups, "ShardUp of the new life"); got != "s1" {
		t.Fatalf("ShardUp(%q), want s1", got)
	}
	// Another process id without an "up" (its up record was lost) too.
	lifeOf(t, tnc, "s1", 11, bus.LifeHeartbeat, time.Minute)
	if got := recv(t, w.downs, "ShardDown on a new pid"); got != "s1" {
		t.Fatalf("ShardDown(%q), want s1", got)
	}
	if got := recv(t, w.ups, "ShardUp of the new pid"); got != "s1" {
		t.Fatalf("ShardUp(%q), want s1", got)
	}
	lifeOf(t, tnc, "s1", 11, bus.LifeHeartbeat, time.Minute)
	lifeOf(t, tnc, "s1", 11, bus.LifeDown, time.Minute)
	if got := recv(t, w.downs, "ShardDown"); got != "s1" {
		t.Fatalf("ShardDown(%q), want s1", got)
	}
	select {
	case s := <-w.ups:
		t.Errorf("extra ShardUp(%q) for a heartbeat of the same life", s)
	default:
	}
}

// starter records the Starter calls around its events.
type starter struct {
	service.Funcs
	startErr error
	log      chan string
}

func (s *starter) Start(_ context.Context, svc *service.Service) error {
	if svc == nil {
		s.log <- "start without a service"
	}
	s.log <- "start"
	return s.startErr
}

func (s *starter) Stop() { s.log <- "stop" }

// TestStarter checks that Start runs before the first event, that its
// error stops Run, and that Stop runs after the last event.
func TestStarter(t *testing.T) {
	snc, tnc := testBus(t)
	st := &starter{log: make(chan string, 16)}
	st.OnMessage = func(*service.Conn, service.Opcode, []byte) { st.log <- "message" }
	s, err := service.New(snc, service.Config{Name: "st"}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	if got := recv(t, st.log, "Start"); got != "start" {
		t.Fatalf("first call %q, want start", got)
	}
	<-s.Ready()
	event(t, tnc, "st", bus.EventMessage, "s1.1", []byte("x"))
	if got := recv(t, st.log, "message"); got != "message" {
		t.Fatalf("second call %q, want message", got)
	}
	cancel()
	if err := recv(t, done, "Run to return"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := recv(t, st.log, "Stop"); got != "stop" {
		t.Fatalf("last call %q, want stop", got)
	}

	failing := &starter{log: make(chan string, 16), startErr: errors.New("no storage")}
	s, err = service.New(snc, service.Config{Name: "st2"}, failing)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "no storage") {
		t.Fatalf("Run with a failing Start: %v", err)
	}
	if got := recv(t, failing.log, "Start"); got != "start" {
		t.Fatalf("call %q, want start", got)
	}
	select {
	case got := <-failing.log:
		t.Fatalf("call %q after a failed Start", got)
	default:
	}
}

// TestNoShardDownWhileTheServiceIsCutOff restarts the NATS server under a
// service and a shard that keeps beating: everyone is silent during the
// outage, which is no reason to think the shard died.
func TestNoShardDownWhileTheServiceIsCutOff(t *testing.T) {
	dir := t.TempDir()
	start := func(port int) *bus.Embedded {
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: port, StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	srv := start(-1)
	t.Cleanup(func() { srv.Shutdown() })
	snc, tnc := bustest.Connect(t, srv.ClientURL()), bustest.Connect(t, srv.ClientURL())
	w := newWatch()
	runService(t, snc, service.Config{Name: "w"}, w)

	// Three beats outlast the clients' reconnect delay (at most 500ms)
	// with room to spare, as three of the default second do.
	const beat = 400 * time.Millisecond
	stop := make(chan struct{})
	var beating sync.WaitGroup
	beating.Go(func() {
		tick := time.NewTicker(beat)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				rec, _ := json.Marshal(bus.Life{Shard: "s1", PID: 1, State: bus.LifeHeartbeat, IntervalMS: beat.Milliseconds()})
				_ = tnc.Publish(bus.Subjects{}.Life("s1"), rec)
			}
		}
	})
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		beating.Wait()
	})
	if got := recv(t, w.ups, "ShardUp"); got != "s1" {
		t.Fatalf("ShardUp(%q)", got)
	}
	port := srv.Server().Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	time.Sleep(6 * beat) // an outage twice as long as three beats
	srv = start(port)
	waitFor(t, "both connections back", func() bool { return snc.IsConnected() && tnc.IsConnected() })
	// Beats flow again; intervals later, still no ShardDown.
	time.Sleep(5 * beat)
	select {
	case s := <-w.downs:
		t.Fatalf("ShardDown(%q) for a bus outage", s)
	default:
	}
	// Silence while connected still counts.
	close(stop)
	if got := recv(t, w.downs, "ShardDown"); got != "s1" {
		t.Fatalf("ShardDown(%q)", got)
	}
}

// Dropped events reach a DropHandler in order with the connection's other
// events; a Handler without one ignores them, and a malformed one is
// counted, not delivered.
func TestDroppedEvents(t *testing.T) {
	snc, tnc := testBus(t)
	type drop struct {
		id     string
		reason service.DropReason
		count  int
	}
	ch := make(chan any, 16)
	s := runService(t, snc, service.Config{Name: "ticker"}, service.Funcs{
		OnMessage: func(c *service.Conn, op service.Opcode, data []byte) { ch <- string(data) },
		OnDropped: func(c *service.Conn, reason service.DropReason, count int) {
			ch <- drop{c.ID(), reason, count}
		},
	})
	event(t, tnc, "ticker", bus.EventMessage, "s1.4", []byte("before"))
	event(t, tnc, "ticker", bus.EventDropped, "s1.4", nil, bus.HeaderDropReason, bus.DropRateLimit, bus.HeaderDropCount, "17")
	event(t, tnc, "ticker", bus.EventDropped, "s1.4", nil, bus.HeaderDropReason, bus.DropQueueFull, bus.HeaderDropCount, "3")
	event(t, tnc, "ticker", bus.EventDropped, "s1.4", nil, bus.HeaderDropReason, bus.DropQueueFull, bus.HeaderDropCount, "0")
	event(t, tnc, "ticker", bus.EventDropped, "s1.4", nil, bus.HeaderDropCount, "2")
	event(t, tnc, "ticker", bus.EventMessage, "s1.4", []byte("after"))
	for i, want := range []any{"before", drop{"s1.4", service.DropRateLimit, 17}, drop{"s1.4", service.DropQueueFull, 3}, "after"} {
		if got := recv(t, ch, "event "+itoa(i)); got != want {
			t.Fatalf("event %d: %+v, want %+v", i, got, want)
		}
	}
	waitFor(t, "the malformed count", func() bool { return s.Stats().Malformed == 2 })

	plain := make(chan seen, 4)
	p := runService(t, snc, service.Config{Name: "plain"}, struct{ service.Handler }{recorder(plain)})
	event(t, tnc, "plain", bus.EventDropped, "s1.5", nil, bus.HeaderDropReason, bus.DropRateLimit, bus.HeaderDropCount, "1")
	event(t, tnc, "plain", bus.EventClose, "s1.5", nil, bus.HeaderCloseCode, "1000")
	if got := recv(t, plain, "close"); got.ev != "close" {
		t.Fatalf("got %+v, want the close", got)
	}
	if st := p.Stats(); st.Malformed != 0 || st.Events != 1 {
		t.Fatalf("stats %+v: a dropped event without a DropHandler is neither delivered nor malformed", st)
	}
}

// A send goes in the compact form only to a shard that published a
// compact event: a shard of a release before the form gets the header
// form, so a fleet upgraded services first loses no message.
func TestSendFormFollowsTheShard(t *testing.T) {
	snc, tnc := testBus(t)
	raw := subscribe(t, tnc, bus.Subjects{}.Shard("s1"))
	runService(t, snc, service.Config{Name: "form", Workers: 1}, service.Funcs{
		OnMessage: func(c *service.Conn, op service.Opcode, data []byte) { _ = c.Send(op, data) },
	})
	event(t, tnc, "form", bus.EventMessage, "s1.1", []byte("old"), bus.HeaderOpcode, bus.OpcodeBinary)
	m := recv(t, raw, "send to a header-form shard")
	wantHeaders(t, m, bus.HeaderCmd, bus.CmdSend, bus.HeaderConn, "s1.1", bus.HeaderOpcode, bus.OpcodeBinary)
	if string(m.Data) != "old" {
		t.Errorf("header-form send carried %q", m.Data)
	}
	compact(t, tnc, "form", bus.AppendCompactMessage(nil, "s1.2", "", true, []byte("new")))
	m = recv(t, raw, "send to a compact shard")
	c, err := bus.ParseCompact(m.Data)
	if m.Header != nil || err != nil || c.Kind != bus.CompactSend || string(c.Conn) != "s1.2" || !c.Binary || string(c.Data) != "new" {
		t.Errorf("send after a compact event: header %v, %+v, %v", m.Header, c, err)
	}
	// A life record saying so is enough, before any compact event.
	raw2 := subscribe(t, tnc, bus.Subjects{}.Shard("s2"))
	rec, _ := json.Marshal(bus.Life{Shard: "s2", State: bus.LifeUp, Compact: true})
	if err := tnc.Publish(bus.Subjects{}.Life("s2"), rec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the life record learned", func() bool {
		event(t, tnc, "form", bus.EventMessage, "s2.1", []byte("probe"))
		m := recv(t, raw2, "send to s2")
		return m.Header == nil
	})
}
