package bus_test

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
)

func TestSubjects(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{bus.Subjects{}.Service("chat"), "shoal.svc.chat"},
		{bus.Subjects{}.Shard("w-1-0"), "shoal.shard.w-1-0"},
		{bus.Subjects{}.Room("team.general"), "shoal.room.team.general"},
		{bus.Subjects{}.All(), "shoal.all"},
		{bus.Subjects{}.Life("a"), "shoal.life.a"},
		{bus.Subjects{}.LifeAll(), "shoal.life.*"},
		{bus.Subjects{Prefix: "x"}.Room("r"), "x.room.r"},
		{bus.Subjects{Prefix: "x"}.RoomAll(), "x.room.>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestValidRoom(t *testing.T) {
	good := []string{"a", "general", "team.general", "a.b.c", "Room_1-x", "~!@#$%^&()", strings.Repeat("r", 200)}
	bad := []string{"", ".x", "x.", "a..b", "a b", "a*", "a.>", "tab\t", "é", "\x7f", strings.Repeat("r", 201)}
	for _, r := range good {
		if err := bus.ValidRoom(r); err != nil {
			t.Errorf("ValidRoom(%q) = %v, want nil", r, err)
		}
	}
	for _, r := range bad {
		if err := bus.ValidRoom(r); !errors.Is(err, bus.ErrInvalidRoom) {
			t.Errorf("ValidRoom(%q) = %v, want ErrInvalidRoom", r, err)
		}
	}
}

func TestValidNames(t *testing.T) {
	for _, s := range []string{"echo", "chat_2", "w-1-0", "A"} {
		if err := bus.ValidShardID(s); err != nil {
			t.Errorf("ValidShardID(%q) = %v", s, err)
		}
		if err := bus.ValidServiceName(s); err != nil {
			t.Errorf("ValidServiceName(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "a.b", "a b", "a*", "é", strings.Repeat("x", 65)} {
		if err := bus.ValidShardID(s); !errors.Is(err, bus.ErrInvalidName) {
			t.Errorf("ValidShardID(%q) = %v, want ErrInvalidName", s, err)
		}
	}
}

func TestConnID(t *testing.T) {
	for _, n := range []uint64{0, 1, 1<<52 - 1, 1<<64 - 1} {
		id := bus.FormatConnID("w-1-0", n)
		shard, conn, err := bus.ParseConnID(id)
		if err != nil || shard != "w-1-0" || conn != n {
			t.Errorf("ParseConnID(%q) = %q, %d, %v", id, shard, conn, err)
		}
	}
	for _, s := range []string{"", "w", "w.", ".1", "w.x", "w.1.2", "w.-1", "w.+1", "a b.1", "w.18446744073709551616"} {
		if _, _, err := bus.ParseConnID(s); !errors.Is(err, bus.ErrInvalidConnID) {
			t.Errorf("ParseConnID(%q) = %v, want ErrInvalidConnID", s, err)
		}
	}
}

func TestEmbeddedJetStream(t *testing.T) {
	a := bustest.RunServer(t)
	b := bustest.RunServer(t)
	if a.ClientURL() == b.ClientURL() {
		t.Fatalf("two servers share %s", a.ClientURL())
	}
	nc := bustest.Connect(t, a.ClientURL())
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream not enabled: %v", err)
	}
	if got := nc.MaxPayload(); got != bus.DefaultMaxPayload {
		t.Errorf("max payload %d, want %d", got, bus.DefaultMaxPayload)
	}
	a.Shutdown()
	a.Shutdown()
}

func TestEmbeddedNeedsStore(t *testing.T) {
	if _, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: -1, JetStream: true}); err == nil {
		t.Fatal("JetStream without a store directory started")
	}
}

func TestConnectWaitsForServer(t *testing.T) {
	// Reserve a port, release it, and start the server there only after
	// Connect has begun retrying.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	attempts := make(chan error, 1)
	go func() {
		nc, err := bus.Connect(bus.Config{URL: url, ConnectTimeout: 30 * time.Second})
		if err == nil {
			nc.Close()
		}
		attempts <- err
	}()
	select {
	case err := <-attempts:
		t.Fatalf("Connect returned before the server existed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	if err := <-attempts; err != nil {
		t.Fatalf("Connect: %v", err)
	}
}

func TestConnectGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()
	if _, err := bus.Connect(bus.Config{URL: url, ConnectTimeout: 200 * time.Millisecond}); err == nil {
		t.Fatal("Connect to nothing succeeded")
	}
}

// QueueSubscribers names exactly the connections in the queue group on the
// subject, once each, and forgets one that unsubscribed.
func TestQueueSubscribers(t *testing.T) {
	e := bustest.RunServer(t)
	subject := bus.Subjects{}.Service("chat")
	conn := func(name string) *nats.Conn {
		nc, err := bus.Connect(bus.Config{URL: e.ClientURL(), Name: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	a, b := conn(bus.ServiceClientName("chat", 1)), conn(bus.ServiceClientName("chat", 2))
	other, plain, wild := conn("other-queue"), conn("no-queue"), conn("wildcard")
	subscribe := func(nc *nats.Conn, subject, queue string) {
		if _, err := nc.QueueSubscribe(subject, queue, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Two subscriptions of one connection still name it once.
	subscribe(a, subject, "chat")
	subscribe(a, subject, "chat")
	subscribe(b, subject, "chat")
	subscribe(other, subject, "elsewhere")
	subscribe(plain, subject, "")
	subscribe(wild, "shoal.svc.*", "chat")
	names, err := e.QueueSubscribers(subject, "chat")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if want := []string{"shoal-service-chat-1", "shoal-service-chat-2"}; !slices.Equal(names, want) {
		t.Fatalf("subscribers %q, want %q", names, want)
	}
	b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, err = e.QueueSubscribers(subject, "chat")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(names, []string{"shoal-service-chat-1"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one closed: %q", names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
