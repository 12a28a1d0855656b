package bustest

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// RunCheckingLeaks runs the tests of m and returns the exit code for
// os.Exit: 1 also when the tests passed but goroutines outlived them (a
// NATS server, connection, subscription or service a test did not stop),
// with every goroutine's stack on stderr. Goroutines get a few seconds to
// wind down first.
func RunCheckingLeaks(m *testing.M) int {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if runtime.NumGoroutine() > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		os.Stderr.WriteString("goroutines leaked by the tests:\n")
		os.Stderr.Write(buf)
		return 1
	}
	return 0
}
