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
