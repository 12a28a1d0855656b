package shard

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// A room of 1000 where 10 members never read: one publisher sends a
// burst far beyond what the 10 can buffer. Each of the other 990 gets
// every message exactly once and in order while the 10 still have not
// read a byte; the 10 hit the queue bound and are closed with 1008 and a
// reason, which they find once they read at last.
func TestRoomOf1000With10SlowMembers(t *testing.T) {
	const (
		members = 1000
		slow    = 10
		msgs    = 200
		size    = 512
	)
	h := startShard(t, func(c *Config) {
		c.MaxQueue = 16 << 10
		// Long enough that the slow members still find their close
		// frame when they read, after the others are done.
		c.CloseTimeout = time.Minute
	})
	// The slow members' socket buffers are as small as the kernel allows
	// at both ends, so that a burst a test can afford passes what their
	// sockets hold many times over and the queue bound is what stops it:
	// left to itself, the kernel grows a send buffer to 4 MiB.
	small := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	clients := make([]*testClient, members)
	ids := make([]string, members)
	for i := range clients {
		if i < slow {
			clients[i] = dialWSWith(t, small, h.addr, "/ws/echo")
		} else {
			clients[i] = dialWS(t, h.addr, "/ws/echo")
		}
		ids[i] = h.event(bus.EventOpen).Header.Get(bus.HeaderConn)
	}
	for i, id := range ids {
		if e := h.command(id, bus.CmdJoin, map[string]string{bus.HeaderRoom: "hall"}, nil); e != "" {
			t.Fatalf("join %s: %s", id, e)
		}
		if i < slow {
			must(t, unix.SetsockoptInt(int(h.s.lookup(bus.ConnIn(id, "t1")).fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 1))
		}
	}

	// The 990 read from now on, each checking it gets 0, 1, 2, ... and
	// then the end marker.
	errs := make(chan error, members)
	var wg sync.WaitGroup
	for _, c := range clients[slow:] {
		wg.Go(func() { errs <- readSequence(c, msgs) })
	}
	payload := make([]byte, size)
	for i := range msgs {
		copy(payload, fmt.Sprintf("%-8d", i))
		must(t, h.nc.Publish(h.subj.Room("hall"), payload))
	}
	must(t, h.nc.Publish(h.subj.Room("hall"), []byte("end")))
	must(t, h.nc.Flush())
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Everyone else is done and the 10 have read nothing: the shard
	// closed exactly them, for their queues.
	st := h.s.Stats()
	if st.ServerCloses["slow_consumer"] != slow {
		t.Fatalf("server closes %v, want %d slow consumers", st.ServerCloses, slow)
	}
	if want := uint64((members-slow)*(msgs+1)) + slow; st.MessagesOut < want {
		t.Fatalf("%d messages out, want at least %d", st.MessagesOut, want)
	}
	for _, c := range clients[:slow] {
		if reason := c.expectClose(ws.StatusPolicyViolation); reason != "outbound queue full: client too slow" {
			t.Fatalf("slow member's close reason %q", reason)
		}
	}
	closed := make(map[string]bool)
	for len(closed) < slow {
		ev := h.event(bus.EventClose)
		if ev.Header.Get(bus.HeaderCloseCode) != "1008" {
			t.Fatalf("close event %v", ev.Header)
		}
		closed[ev.Header.Get(bus.HeaderConn)] = true
	}
	for _, id := range ids[:slow] {
		if !closed[id] {
			t.Fatalf("slow member %s had no close event; closed: %v", id, closed)
		}
	}
	if n := h.s.Conns(); n != members-slow {
		t.Fatalf("%d connections left, want %d", n, members-slow)
	}
}

// readSequence reads n messages numbered 0 to n-1 in order, then "end".
func readSequence(c *testClient, n int) error {
	for want := 0; ; want++ {
		c.c.SetReadDeadline(time.Now().Add(time.Minute))
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return fmt.Errorf("member %s after %d messages: %v", c.c.LocalAddr(), want, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return err
		}
		if h.OpCode == ws.OpClose {
			code, reason := wire.ParseClose(p)
			return fmt.Errorf("member %s closed after %d messages: %d %s", c.c.LocalAddr(), want, code, reason)
		}
		if h.OpCode != ws.OpText {
			want--
			continue
		}
		if string(p) == "end" {
			if want != n {
				return fmt.Errorf("member %s got the end after %d messages, want %d", c.c.LocalAddr(), want, n)
			}
			return nil
		}
		got, err := strconv.Atoi(string(trimSpace(p[:8])))
		if err != nil || got != want {
			return fmt.Errorf("member %s got message %q, want %d", c.c.LocalAddr(), p[:8], want)
		}
	}
}

func trimSpace(p []byte) []byte {
	for len(p) > 0 && p[len(p)-1] == ' ' {
		p = p[:len(p)-1]
	}
	return p
}
