package supervisor

import "errors"

// Sentinel errors of the supervisor.
var (
	// ErrConfig is returned by New for an unusable Config.
	ErrConfig = errors.New("supervisor: bad config")
	// ErrStopped is returned by operations on a stopped supervisor.
	ErrStopped = errors.New("supervisor: stopped")
)
