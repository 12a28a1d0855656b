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
	// ErrTarget reports a target server of compare or sweep that could not
	// be started, or did not stop cleanly.
	ErrTarget = errors.New("bench: target server failed")
	// ErrPeers reports that the peer servers could not be found or built.
	ErrPeers = errors.New("bench: peer servers unavailable")
	// ErrSnapshot reports a histogram snapshot that cannot be imported.
	ErrSnapshot = errors.New("bench: bad histogram snapshot")
	// ErrDelivery reports a run whose checks found messages lost,
	// duplicated or out of order (the chat scenario's).
	ErrDelivery = errors.New("bench: delivery check failed")
)
