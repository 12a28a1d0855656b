//go:build !linux

package netpoll

// shoal polls with epoll and runs on Linux only. This declaration makes a
// build for another system stop here with a readable name.
var _ = netpoll_requires_linux_epoll
