package netpoll

import "errors"

// Sentinel errors, wrapped with context by the functions that return them.
var (
	// ErrClosed reports use of a Poller after Close.
	ErrClosed = errors.New("netpoll: poller closed")
	// ErrRegistered reports Add of a descriptor that is already registered.
	ErrRegistered = errors.New("netpoll: descriptor already registered")
	// ErrNotRegistered reports Mod or Del of a descriptor that is not registered.
	ErrNotRegistered = errors.New("netpoll: descriptor not registered")
	// ErrPoolClosed reports Schedule on a Pool after Close began.
	ErrPoolClosed = errors.New("netpoll: pool closed")
)
