// Package peers holds only the end-to-end tests of the bench peer binaries;
// each peer (gorilla, nbio, gws) is its own main package below this one.
package peers

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ioTimeout bounds every wait so a broken peer fails the test instead of hanging it.
const ioTimeout = 15 * time.Second

var peerNames = []string{"gorilla", "nbio", "gws"}

func TestPeers(t *testing.T) {
	for _, name := range peerNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := buildPeer(t, name)
			t.Run("Echo", func(t *testing.T) { t.Parallel(); testEcho(t, bin) })
			t.Run("Fanout", func(t *testing.T) { t.Parallel(); testFanout(t, bin) })
			t.Run("BadJoin", func(t *testing.T) { t.Parallel(); testBadJoin(t, bin) })
			t.Run("ReadLimit", func(t *testing.T) { t.Parallel(); testReadLimit(t, bin) })
			t.Run("SIGTERM", func(t *testing.T) { t.Parallel(); testSIGTERM(t, bin) })
			if name != "gws" { // gws queues writes without bound and has no knob to cap them.
				t.Run("SlowClientDropped", func(t *testing.T) { t.Parallel(); testSlowClient(t, bin) })
			}
		})
	}
}

func testEcho(t *testing.T, bin string) {
	p := startPeer(t, bin)
	c := dial(t, p.addr, "/ws/echo")

	big := bytes.Repeat([]byte{0xa5}, 200<<10)
	cases := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello, echo")},
		{websocket.BinaryMessage, benchPayload(1, 1, 64)},
		{websocket.BinaryMessage, big},
	}
	for _, tc := range cases {
		send(t, c, tc.typ, tc.data)
		expect(t, c, tc.typ, tc.data)
	}
}

func testFanout(t *testing.T, bin string) {
	p := startPeer(t, bin)
	a := join(t, p.addr, "r")
	b := join(t, p.addr, "r")
	other := join(t, p.addr, "s")

	msg := benchPayload(7, 1, 100)
	send(t, a, websocket.BinaryMessage, msg)
	expect(t, a, websocket.BinaryMessage, msg)
	expect(t, b, websocket.BinaryMessage, msg)

	// A duplicate of msg would be queued ahead of the marker, so the marker
	// being next on both members proves msg arrived exactly once.
	marker := []byte("marker from b")
	send(t, b, websocket.TextMessage, marker)
	expect(t, a, websocket.TextMessage, marker)
	expect(t, b, websocket.TextMessage, marker)

	// The other room saw neither message: its own message is the first it gets.
	own := benchPayload(9, 1, 24)
	send(t, other, websocket.BinaryMessage, own)
	expect(t, other, websocket.BinaryMessage, own)
}

func testBadJoin(t *testing.T, bin string) {
	p := startPeer(t, bin)
	bad := []struct {
		name string
		typ  int
		data []byte
	}{
		{"NotJoin", websocket.TextMessage, []byte("hello")},
		{"Binary", websocket.BinaryMessage, []byte("join r")},
		{"EmptyRoom", websocket.TextMessage, []byte("join ")},
		{"BadByte", websocket.TextMessage, []byte("join a/b")},
		{"TooLong", websocket.TextMessage, []byte("join " + strings.Repeat("x", 65))},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.addr, "/ws/fanout")
			send(t, c, tc.typ, tc.data)
			err := readErr(t, c)
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text == "" {
				t.Fatalf("read after %q: got %v, want close 1008 with a reason", tc.data, err)
			}
		})
	}
	// The longest legal room name is accepted.
	join(t, p.addr, strings.Repeat("Az09_.-", 9)+"x")
}

func testReadLimit(t *testing.T, bin string) {
	p := startPeer(t, bin)
	c := dial(t, p.addr, "/ws/echo")
	send(t, c, websocket.BinaryMessage, make([]byte, 1<<20))
	expect(t, c, websocket.BinaryMessage, make([]byte, 1<<20))
	send(t, c, websocket.BinaryMessage, make([]byte, 1<<20+1))
	if err := readErr(t, c); err == nil {
		t.Fatal("connection survived a message over 1 MiB")
	}
}

func testSlowClient(t *testing.T, bin string) {
	const (
		msgSize = 64 << 10
		// floodCount*msgSize is far above any peer's per-connection backlog
		// plus the loopback socket buffers.
		floodCount = 1024
	)
	p := startPeer(t, bin)
	slow := join(t, p.addr, "r")
	flooder := join(t, p.addr, "r")

	// The flooder reads its own copies back in small windows, so it never
	// looks slow itself while the never-reading member piles up a backlog.
	const window = 16
	msg := benchPayload(2, 0, msgSize)
	for sent := 0; sent < floodCount; sent += window {
		for i := 0; i < window; i++ {
			send(t, flooder, websocket.BinaryMessage, msg)
		}
		for i := 0; i < window; i++ {
			expect(t, flooder, websocket.BinaryMessage, msg)
		}
	}

	// Only now does slow read: the peer must have cut it off part way.
	got := 0
	for {
		_ = slow.SetReadDeadline(time.Now().Add(ioTimeout))
		_, _, err := slow.ReadMessage()
		if err == nil {
			got++
			continue
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("slow client still connected after %d of %d messages", got, floodCount)
		}
		break
	}
	if got >= floodCount {
		t.Fatalf("slow client received all %d messages, want it dropped", got)
	}
}

func testSIGTERM(t *testing.T, bin string) {
	p := startPeer(t, bin)
	echo := dial(t, p.addr, "/ws/echo")
	member := join(t, p.addr, "r")

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(ioTimeout):
		t.Fatal("peer did not exit after SIGTERM")
	}
	if p.waitErr != nil {
		t.Fatalf("peer exit: %v (stderr: %s)", p.waitErr, p.stderr.String())
	}
	if p.rest != "" {
		t.Fatalf("stdout after the listening line: %q", p.rest)
	}
	for _, c := range []*websocket.Conn{echo, member} {
		if err := readErr(t, c); err == nil {
			t.Fatal("connection still open after the peer exited")
		}
	}
}

// peer is one running peer process.
type peer struct {
	addr    string
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	exited  chan struct{} // closed once the process has been waited for
	waitErr error         // valid after exited is closed
	rest    string        // stdout after the listening line; valid after exited
}

func buildPeer(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	args := []string{"build", "-o", bin}
	// nbio hands each accepted fd to its pollers through epoll, a happens-before
	// edge the race detector cannot see, so a race build of it reports races
	// inside the library on every connection.
	if raceEnabled && name != "nbio" {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "./"+name)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

func startPeer(t *testing.T, bin string) *peer {
	t.Helper()
	p := &peer{cmd: exec.Command(bin, "-addr", "127.0.0.1:0"), stderr: new(bytes.Buffer), exited: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		defer close(p.exited)
		r := bufio.NewReader(stdout)
		line, err := r.ReadString('\n')
		if err == nil {
			lines <- line
		}
		rest, _ := io.ReadAll(r)
		p.rest = string(rest)
		if err != nil {
			p.rest = line + p.rest
		}
		p.waitErr = p.cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })

	select {
	case line := <-lines:
		addr, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "listening ")
		if !ok || strings.HasSuffix(addr, ":0") {
			t.Fatalf("first stdout line %q, want listening <addr>", line)
		}
		p.addr = addr
	case <-p.exited:
		t.Fatalf("peer exited before listening: %v (stdout %q, stderr %s)", p.waitErr, p.rest, p.stderr.String())
	case <-time.After(ioTimeout):
		t.Fatal("no listening line")
	}
	return p
}

// stop ends the peer with SIGTERM, as a bench run does, and fails the test
// if it does not exit cleanly or the race detector reported anything.
func (p *peer) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(ioTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Error("peer did not exit after SIGTERM")
		}
	}
	if p.waitErr != nil {
		t.Errorf("peer exit: %v", p.waitErr)
	}
	if strings.Contains(p.stderr.String(), "DATA RACE") {
		t.Errorf("race detector report from the peer:\n%s", p.stderr.String())
	}
}

func dial(t *testing.T, addr, path string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: ioTimeout}
	c, resp, err := d.Dial("ws://"+addr+path, nil)
	if err != nil {
		t.Fatalf("dial %s%s: %v", addr, path, err)
	}
	if resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("unexpected extensions %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// join opens a fanout connection and returns it once the peer confirmed membership.
func join(t *testing.T, addr, room string) *websocket.Conn {
	t.Helper()
	c := dial(t, addr, "/ws/fanout")
	send(t, c, websocket.TextMessage, []byte("join "+room))
	expect(t, c, websocket.TextMessage, []byte("joined "+room))
	return c
}

func send(t *testing.T, c *websocket.Conn, typ int, data []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(typ, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func expect(t *testing.T, c *websocket.Conn, typ int, data []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	gotTyp, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gotTyp != typ || !bytes.Equal(got, data) {
		t.Fatalf("got type %d %q, want type %d %q", gotTyp, clip(got), typ, clip(data))
	}
}

// readErr reads until the connection fails and returns that error; a data
// message instead means the connection was not closed.
func readErr(t *testing.T, c *websocket.Conn) error {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, data, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got message %q, want the connection to close", clip(data))
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// benchPayload builds a message in the bench payload format.
func benchPayload(sender, seq uint64, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b[0:], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint64(b[8:], sender)
	binary.BigEndian.PutUint64(b[16:], seq)
	for i := 24; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
