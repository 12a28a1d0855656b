package acceptor

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A listener handed over as a file keeps the socket, and the connections
// waiting in its queue, when the first holder closes its descriptor: the
// hand-over of a rolling restart.
func TestFileListenerKeepsTheQueue(t *testing.T) {
	old, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := old.File()
	if err != nil {
		t.Fatal(err)
	}
	// The child's copy, as it would inherit it.
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	next, err := FileListener(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.Addr() != old.Addr() {
		t.Fatalf("inherited listener on %v, want %v", next.Addr(), old.Addr())
	}
	// A client whose connection waits in the queue while the old holder
	// lets go.
	c, err := net.DialTimeout("tcp", old.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cfd, _, err := next.Accept()
		if err == nil {
			// Accepted connections send each frame at once (see noDelay).
			if on, err := unix.GetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || on != 1 {
				t.Errorf("accepted connection: TCP_NODELAY %d (%v), want 1", on, err)
			}
			unix.Close(cfd)
			break
		}
		if !errors.Is(err, ErrWouldBlock) || time.Now().After(deadline) {
			t.Fatalf("accept on the inherited listener: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}

	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if _, err := FileListener(s); !errors.Is(err, ErrBadAddress) {
		t.Errorf("a socket that does not listen: %v, want ErrBadAddress", err)
	}
}
