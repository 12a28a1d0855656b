package echo_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/service"
	"github.com/shoal-gw/shoal/service/echo"
)

// TestEcho plays a shard on a real NATS server: it publishes client events
// to the echo service and checks the send commands that come back.
func TestEcho(t *testing.T) {
	srv := bustest.RunServer(t)
	svcConn := bustest.Connect(t, srv.ClientURL())
	shard := bustest.Connect(t, srv.ClientURL())

	cmds := make(chan *nats.Msg, 16)
	bustest.Subscribe(t, shard, bus.Subjects{}.Shard("s7"), cmds)
	if err := shard.Flush(); err != nil {
		t.Fatal(err)
	}

	s, err := service.New(svcConn, service.Config{Name: "echo"}, echo.New())
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
	case <-time.After(10 * time.Second):
		t.Fatal("echo service not ready")
	}

	publish := func(ev string, data []byte, kv ...string) {
		t.Helper()
		m := nats.NewMsg(bus.Subjects{}.Service("echo"))
		m.Header.Set(bus.HeaderEvent, ev)
		m.Header.Set(bus.HeaderConn, "s7.12")
		for i := 0; i+1 < len(kv); i += 2 {
			m.Header.Set(kv[i], kv[i+1])
		}
		m.Data = data
		if err := shard.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}

	publish(bus.EventOpen, nil, bus.HeaderPath, "/echo")
	cases := []struct {
		name   string
		opcode string // header sent; "" means absent
		data   []byte
		want   string // opcode header expected back
	}{
		{"text", bus.OpcodeText, []byte("hello, shoal"), bus.OpcodeText},
		{"absent opcode is text", "", []byte("plain"), bus.OpcodeText},
		{"binary", bus.OpcodeBinary, []byte{0, 0xff, 0x80, '\n'}, bus.OpcodeBinary},
		{"empty", bus.OpcodeText, nil, bus.OpcodeText},
	}
	for _, c := range cases {
		if c.opcode == "" {
			publish(bus.EventMessage, c.data)
		} else {
			publish(bus.EventMessage, c.data, bus.HeaderOpcode, c.opcode)
		}
		var m *nats.Msg
		select {
		case m = <-cmds:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no echo", c.name)
		}
		for k, want := range map[string]string{
			bus.HeaderCmd:    bus.CmdSend,
			bus.HeaderConn:   "s7.12",
			bus.HeaderOpcode: c.want,
		} {
			if got := m.Header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got, want)
			}
		}
		if !bytes.Equal(m.Data, c.data) {
			t.Errorf("%s: payload %q, want %q", c.name, m.Data, c.data)
		}
	}
	// Open and close send nothing: after a close, the only command is the
	// echo of a later message.
	publish(bus.EventClose, nil, bus.HeaderCloseCode, "1000")
	publish(bus.EventMessage, []byte("last"))
	select {
	case m := <-cmds:
		if string(m.Data) != "last" {
			t.Errorf("command after close: %v %q", m.Header, m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no echo of the last message")
	}
}
