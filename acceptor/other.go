//go:build !linux

package acceptor

// shoal runs on Linux only: it needs epoll and SO_REUSEPORT. Building for
// another system stops here with "undefined: shoal_requires_linux".
var _ = shoal_requires_linux
