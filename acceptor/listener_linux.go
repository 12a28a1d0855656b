//go:build linux

package acceptor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultBacklog is the listen backlog when none is given. The kernel caps
// it at net.core.somaxconn; deploy/ raises that for fast connect ramps.
const DefaultBacklog = 65535

// Listener is a non-blocking TCP listening socket with SO_REUSEPORT, so
// that each worker process owns its own accept queue on a shared port and
// the kernel spreads new connections across them.
type Listener struct {
	fd   int
	addr netip.AddrPort
}

// Listen opens a listener on addr ("host:port"; an empty host means all
// IPv4 addresses). Port 0 picks a free port, which only makes sense for a
// single process: workers sharing a port must all be given the same one.
func Listen(addr string, backlog int) (*Listener, error) {
	ap, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if backlog <= 0 {
		backlog = DefaultBacklog
	}
	fd, err := reusePortSocket(ap)
	if err != nil {
		return nil, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("acceptor: listen %s: %w", addr, err)
	}
	bound, err := localAddr(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Listener{fd: fd, addr: bound}, nil
}

// Reserve binds a SO_REUSEPORT socket on addr without listening and
// returns it with the bound address. A supervisor holds it so that a port
// chosen with ":0" stays its own while workers listen on the same port; a
// socket that does not listen never receives connections.
func Reserve(addr string) (fd int, bound netip.AddrPort, err error) {
	ap, err := ParseAddr(addr)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	fd, err = reusePortSocket(ap)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	bound, err = localAddr(fd)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	return fd, bound, nil
}

// ParseAddr parses "host:port" where host is an IP literal, "localhost",
// or empty (all IPv4 addresses).
func ParseAddr(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w %q: %v", ErrBadAddress, addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w %q: port must be 0-65535", ErrBadAddress, addr)
	}
	var ip netip.Addr
	switch host {
	case "":
		ip = netip.IPv4Unspecified()
	case "localhost":
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		ip, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w %q: host must be an IP address", ErrBadAddress, addr)
		}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

func reusePortSocket(ap netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if ap.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("acceptor: socket: %w", err)
	}
	opts := []struct {
		name string
		opt  int
	}{
		{"SO_REUSEADDR", unix.SO_REUSEADDR},
		{"SO_REUSEPORT", unix.SO_REUSEPORT},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("acceptor: %s: %w", o.name, err)
		}
	}
	if err := noDelay(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("acceptor: bind %s: %w", ap, err)
	}
	return fd, nil
}

// noDelay turns Nagle's algorithm off on a listening socket; Linux copies
// the option to every connection it accepts, so no accept pays a call for
// it. A WebSocket frame is a message the client waits for: with Nagle on,
// one written while an earlier one is unacknowledged waits for the ACK,
// which the client's delayed ACK may hold back up to 40 ms. (Go's net
// package turns it off on every TCP connection, which is how the servers
// built on it go without.)
func noDelay(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fmt.Errorf("acceptor: TCP_NODELAY: %w", err)
	}
	return nil
}

// FileListener takes over fd, a listening TCP socket this process
// inherited (shoal serve opens each worker's listener and hands it down, so
// that the socket, and the connections waiting in its queue, outlive the
// worker that a rolling restart replaces). It fails unless fd listens.
func FileListener(fd int) (*Listener, error) {
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 1 {
		return nil, fmt.Errorf("%w: fd %d is not a listening socket (%v)", ErrBadAddress, fd, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("acceptor: inherited listener: %w", err)
	}
	unix.CloseOnExec(fd)
	// Set again: the socket may come from another program (systemd).
	if err := noDelay(fd); err != nil {
		return nil, err
	}
	bound, err := localAddr(fd)
	if err != nil {
		return nil, err
	}
	return &Listener{fd: fd, addr: bound}, nil
}

// File returns a duplicate of the listening socket for a child process to
// inherit (exec.Cmd.ExtraFiles). The duplicate shares the socket: closing
// either leaves the other listening.
func (l *Listener) File() (*os.File, error) {
	// Close-on-exec, so that only the child it is meant for inherits it
	// (exec passes ExtraFiles on whatever their flag), not one started by
	// another goroutine meanwhile.
	fd, err := unix.FcntlInt(uintptr(l.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("acceptor: dup listener: %w", err)
	}
	return os.NewFile(uintptr(fd), "listener "+l.addr.String()), nil
}

// Fd is the listening socket, for registration with a poller.
func (l *Listener) Fd() int { return l.fd }

// Addr is the bound address (with the real port when 0 was asked for).
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Accept takes one waiting connection without blocking. The returned fd is
// non-blocking and close-on-exec. It returns ErrWouldBlock when the queue
// is empty; other errors are the kernel's (EMFILE and the like), wrapped.
func (l *Listener) Accept() (int, netip.AddrPort, error) {
	for {
		fd, sa, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			return fd, fromSockaddr(sa), nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
			// The peer gave up between SYN and accept; take the next one.
			continue
		case errors.Is(err, unix.EAGAIN):
			return -1, netip.AddrPort{}, ErrWouldBlock
		default:
			return -1, netip.AddrPort{}, fmt.Errorf("acceptor: accept: %w", err)
		}
	}
}

// Close closes the listening socket. When it was the socket's last
// descriptor, connections still in its accept queue are reset by the
// kernel unless net.ipv4.tcp_migrate_req moves them to another listener of
// the same port (see deploy/).
func (l *Listener) Close() error {
	if l.fd < 0 {
		return ErrClosed
	}
	err := unix.Close(l.fd)
	l.fd = -1
	return err
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is6() {
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func localAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("acceptor: getsockname: %w", err)
	}
	return fromSockaddr(sa), nil
}
