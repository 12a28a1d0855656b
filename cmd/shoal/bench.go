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

// runBench runs `shoal bench SCENARIO [flags]`, `shoal bench compare` or
// `shoal bench sweep`. An interrupt stops the load early; the report then
// covers what was measured.
func runBench(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := bench.Config{
		Args:     args,
		Stdout:   stdout,
		Stderr:   stderr,
		Stdin:    os.Stdin,
		Terminal: isTerminal(stdout),
	}
	var err error
	switch {
	case len(args) > 0 && args[0] == "compare":
		cfg.Args = args[1:]
		_, err = bench.Compare(ctx, cfg)
	case len(args) > 0 && args[0] == "sweep":
		cfg.Args = args[1:]
		_, err = bench.Sweep(ctx, cfg)
	default:
		_, err = bench.Main(ctx, cfg)
	}
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
