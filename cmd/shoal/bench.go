package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-gw/shoal/bench"
)

// runBench runs `shoal bench SCENARIO [flags]`. An interrupt stops the
// load early; the report then covers what was measured.
func runBench(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := bench.Main(ctx, bench.Config{
		Args:     args,
		Stdout:   stdout,
		Stderr:   stderr,
		Stdin:    os.Stdin,
		Terminal: isTerminal(stdout),
	})
	if errors.Is(err, bench.ErrUsage) || errors.Is(err, bench.ErrUnknownScenario) {
		return usageError("%v", err)
	}
	return err
}

// isTerminal reports whether w is a character device, where progress is
// rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
