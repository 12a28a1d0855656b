package service_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/service"
)

const waitLimit = 10 * time.Second

// testBus starts a NATS server and returns a connection for the service and
// one for the test, which plays the shards.
func testBus(t testing.TB) (svcConn, shardConn *nats.Conn) {
	t.Helper()
	srv := bustest.RunServer(t)
	return bustest.Connect(t, srv.ClientURL()), bustest.Connect(t, srv.ClientURL())
}

// runService starts a Service, waits until it is subscribed, and stops it
// when the test ends, failing the test if Run returned an error.
func runService(t testing.TB, nc *nats.Conn, cfg service.Config, h service.Handler) *service.Service {
	t.Helper()
	s, err := service.New(nc, cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
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
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("service not ready")
	}
	return s
}

// fakeShard subscribes to a shard's command subject and returns the commands.
func fakeShard(t testing.TB, nc *nats.Conn, prefix, id string) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 1024)
	bustest.Subscribe(t, nc, bus.Subjects{Prefix: prefix}.Shard(id), ch)
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return ch
}

// subscribe collects what arrives on subject.
func subscribe(t testing.TB, nc *nats.Conn, subject string) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return ch
}

// event publishes a client event as a shard would; kv are header pairs.
func event(t testing.TB, nc *nats.Conn, svc, ev, conn string, data []byte, kv ...string) {
	t.Helper()
	h := nats.Header{}
	if ev != "" {
		h.Set(bus.HeaderEvent, ev)
	}
	if conn != "" {
		h.Set(bus.HeaderConn, conn)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	m := &nats.Msg{Subject: bus.Subjects{}.Service(svc), Header: h, Data: data}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatalf("publish event: %v", err)
	}
}

// compact publishes payload on svc's subject without headers: a message
// event in the compact form, or garbage claiming to be one.
func compact(t testing.TB, nc *nats.Conn, svc string, payload []byte) {
	t.Helper()
	if err := nc.Publish(bus.Subjects{}.Service(svc), payload); err != nil {
		t.Fatalf("publish compact event: %v", err)
	}
}

// life publishes a life record for shard, as process 1.
func life(t testing.TB, nc *nats.Conn, shard, state string, interval time.Duration) {
	t.Helper()
	lifeOf(t, nc, shard, 1, state, interval)
}

// lifeOf publishes a life record for shard as process pid.
func lifeOf(t testing.TB, nc *nats.Conn, shard string, pid int, state string, interval time.Duration) {
	t.Helper()
	rec := bus.Life{Shard: shard, PID: pid, State: state, Time: time.Now(), IntervalMS: interval.Milliseconds()}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(bus.Subjects{}.Life(shard), b); err != nil {
		t.Fatalf("publish life: %v", err)
	}
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

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wantHeaders fails unless m carries every header pair in kv.
func wantHeaders(t testing.TB, m *nats.Msg, kv ...string) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		if got := m.Header.Get(kv[i]); got != kv[i+1] {
			t.Errorf("%s: header %s = %q, want %q", m.Subject, kv[i], got, kv[i+1])
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
