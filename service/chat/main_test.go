package chat

import (
	"os"
	"testing"

	"github.com/shoal-gw/shoal/bus/bustest"
)

// TestMain fails the run if goroutines outlive the tests: every instance,
// shard, NATS server and client a test starts must be stopped by its
// cleanup.
func TestMain(m *testing.M) { os.Exit(bustest.RunCheckingLeaks(m)) }
