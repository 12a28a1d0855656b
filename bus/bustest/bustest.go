// Package bustest starts real NATS servers for tests.
package bustest

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// RunServer starts an embedded NATS server with JetStream on a random
// loopback port, with its store in a temporary directory, and shuts it down
// when the test ends.
func RunServer(t testing.TB) *bus.Embedded {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{
		Port:      -1,
		StoreDir:  t.TempDir(),
		JetStream: true,
	})
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// Connect dials url and closes the connection when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(bus.Config{URL: url, Name: t.Name()})
	if err != nil {
		t.Fatalf("connect NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Subscribe delivers what arrives on subject to ch in the header form
// (bus.Expand), so a test reads message events and send commands the same
// way whichever form carried them. A message that does not expand fails
// the test. It blocks while ch is full, leaving the backlog in nats.go,
// and unsubscribes when the test ends.
func Subscribe(t testing.TB, nc *nats.Conn, subject string, ch chan<- *nats.Msg) *nats.Subscription {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if err := bus.Expand(m); err != nil {
			t.Errorf("%s: %v", subject, err)
			return
		}
		ch <- m
	})
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatalf("pending limits %s: %v", subject, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}
