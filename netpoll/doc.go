// Package netpoll is shoal's readiness layer: epoll on raw file descriptors,
// a bounded goroutine pool that runs the work readiness calls for, and a
// timing wheel for per-connection deadlines.
//
// Together they let a connection that is idle cost no goroutine, no buffer
// and no runtime timer: only its registration in epoll and a Timer embedded
// in the caller's connection struct.
package netpoll
