// Package netpoll is shoal's readiness layer: epoll on raw file descriptors,
// a bounded goroutine pool that runs the work readiness calls for, a
// timing wheel for per-connection deadlines, and token buckets on the
// wheel's clock for rate limits.
//
// Together they let a connection that is idle cost no goroutine, no buffer
// and no runtime timer: only its registration in epoll, a Timer embedded
// in the caller's connection struct, and 8 bytes per rate limit.
package netpoll
