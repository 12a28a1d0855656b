package bench

import "errors"

// Sentinel errors, wrapped with context by the functions that return them.
var (
	// ErrUsage reports a bad command line.
	ErrUsage = errors.New("bench: usage")
	// ErrUnknownScenario reports a scenario name that is not registered.
	ErrUnknownScenario = errors.New("bench: unknown scenario")
	// ErrChild reports a child process that failed or sent a bad record.
	ErrChild = errors.New("bench: child process failed")
	// ErrBarrier reports a barrier that could not be passed (the parent
	// went away, or a child did).
	ErrBarrier = errors.New("bench: barrier failed")
	// ErrSnapshot reports a histogram snapshot that cannot be imported.
	ErrSnapshot = errors.New("bench: bad histogram snapshot")
)
