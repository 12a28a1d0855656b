// Command shoal is a WebSocket gateway for very many concurrent
// connections: `shoal serve` runs it, `shoal bench` measures it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `shoal: a WebSocket gateway for very many concurrent connections.

Usage:
  shoal serve   [flags]          run the gateway: NATS, workers and services
  shoal worker  [flags]          run one worker (started by serve)
  shoal service NAME [flags]     run a bundled service (started by serve): %s
  shoal version                  print the version

Run "shoal COMMAND -h" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code: 0 on
// success, 2 on bad usage, 1 on failure.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, bundledNames())
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(args[1:], stdout, stderr)
	case "worker":
		err = runWorker(args[1:], stderr)
	case "service":
		err = runService(args[1:], stderr)
	case "bench":
		err = runBench(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help", "-help":
		fmt.Fprintf(stdout, usage, bundledNames())
	default:
		fmt.Fprintf(stderr, "shoal: unknown command %q\n\n", args[0])
		fmt.Fprintf(stderr, usage, bundledNames())
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "shoal:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "shoal:", err)
		return 1
	}
}

// errUsage marks errors caused by the command line.
var errUsage = errors.New("usage")

func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}
