package service_test

import (
	"os"
	"testing"

	"github.com/shoal-gw/shoal/bus/bustest"
)

// TestMain fails the run if goroutines outlive the tests: every Run, watcher
// and NATS server started by a test must be stopped by its cleanup.
func TestMain(m *testing.M) { os.Exit(bustest.RunCheckingLeaks(m)) }
