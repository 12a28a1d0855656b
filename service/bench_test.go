package service_test

import (
	"sync/atomic"
	"testing"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service"
)

// BenchmarkConnSend measures building and publishing one send command, in
// the compact form: the connection comes from a compact event of its
// shard. The shard subject has no subscriber, so the server discards it.
func BenchmarkConnSend(b *testing.B) {
	snc, tnc := testBus(b)
	got := make(chan *service.Conn, 1)
	runService(b, snc, service.Config{Name: "bench"}, service.Funcs{
		OnMessage: func(c *service.Conn, _ service.Opcode, _ []byte) { got <- c },
	})
	compact(b, tnc, "bench", bus.AppendCompactMessage(nil, "s1.123456", "", false, nil))
	benchSend(b, recv(b, got, "the compact event"))
}

// BenchmarkConnSendHeaders is BenchmarkConnSend to a shard the service has
// had no compact event from, which gets the header form.
func BenchmarkConnSendHeaders(b *testing.B) {
	nc, _ := testBus(b)
	s, err := service.New(nc, service.Config{Name: "bench"}, service.Funcs{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := s.Conn("s1.123456")
	if err != nil {
		b.Fatal(err)
	}
	benchSend(b, c)
}

func benchSend(b *testing.B, c *service.Conn) {
	data := make([]byte, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := c.Send(service.Text, data); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkDispatch(b *testing.B, workers int, headers bool) {
	snc, tnc := testBus(b)
	var handled atomic.Int64
	runService(b, snc, service.Config{Name: "bench", Workers: workers}, service.Funcs{
		OnMessage: func(*service.Conn, service.Opcode, []byte) { handled.Add(1) },
	})
	data := make([]byte, 64)
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = bus.FormatConnID("s1", uint64(i))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	n := 0
	var buf []byte
	for b.Loop() {
		if headers {
			event(b, tnc, "bench", bus.EventMessage, ids[n%len(ids)], data)
		} else {
			buf = bus.AppendCompactMessage(buf[:0], ids[n%len(ids)], "", false, data)
			compact(b, tnc, "bench", buf)
		}
		n++
	}
	waitFor(b, "all events handled", func() bool { return handled.Load() == int64(n) })
}

// BenchmarkDispatch measures a message event from publish to handler
// through a real NATS server, spread over 64 connections: in the compact
// form shards publish, and (Headers) in the header form.
func BenchmarkDispatch_1Worker(b *testing.B)        { benchmarkDispatch(b, 1, false) }
func BenchmarkDispatch_4Workers(b *testing.B)       { benchmarkDispatch(b, 4, false) }
func BenchmarkDispatchHeaders_1Worker(b *testing.B) { benchmarkDispatch(b, 1, true) }
