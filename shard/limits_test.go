package shard

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// connEvents collects the events of one connection, in the order the
// shard published them, until its close event.
func (h *harness) connEvents(cid string) (events []*nats.Msg) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-h.evs:
			if m.Header.Get(bus.HeaderConn) != cid {
				continue
			}
			events = append(events, m)
			if m.Header.Get(bus.HeaderEvent) == bus.EventClose {
				return events
			}
		case <-deadline:
			h.t.Fatalf("no close event for %s; got %d events", cid, len(events))
		}
	}
}

// dropCount reads a dropped event's count, checking its reason.
func dropCount(t testing.TB, m *nats.Msg, reason string) int {
	t.Helper()
	if got := m.Header.Get(bus.HeaderDropReason); got != reason {
		t.Fatalf("dropped event with reason %q, want %q", got, reason)
	}
	n, err := strconv.Atoi(m.Header.Get(bus.HeaderDropCount))
	if err != nil || n < 1 {
		t.Fatalf("dropped event with count %q", m.Header.Get(bus.HeaderDropCount))
	}
	return n
}

// A client past its rate keeps its connection: the excess is dropped, the
// service hears how much in dropped events (the first at once, the rest
// at most one a second), and every message is either delivered or
// counted as dropped.
func TestRateLimitDrops(t *testing.T) {
	const rate, burst, sent = 1, 3, 20
	h := startShard(t, func(c *Config) {
		c.MaxMessageRate, c.MaxMessageBurst, c.MaxMessageDrops = rate, burst, -1
	})
	tc, cid := h.connect("/ws/echo")
	delivered, dropped, drops := 0, 0, 0
	deadline := time.After(10 * time.Second)
	collect := func(done func() bool) {
		t.Helper()
		for !done() {
			select {
			case m := <-h.evs:
				switch m.Header.Get(bus.HeaderEvent) {
				case bus.EventMessage:
					delivered++
				case bus.EventDropped:
					if m.Header.Get(bus.HeaderConn) != cid {
						t.Fatalf("dropped event for %s", m.Header.Get(bus.HeaderConn))
					}
					dropped += dropCount(t, m, bus.DropRateLimit)
					drops++
				}
			case <-deadline:
				t.Fatalf("%d delivered and %d dropped of %d", delivered, dropped, sent)
			}
		}
	}
	start := time.Now()
	// The burst passes and the next message is dropped, which is reported
	// at once. The report carries what was dropped by the time it goes
	// out, so the rest of the flood waits for it.
	for i := range burst + 1 {
		tc.send(ws.OpText, true, []byte(strconv.Itoa(i)))
	}
	collect(func() bool { return drops == 1 })
	for i := burst + 1; i < sent; i++ {
		tc.send(ws.OpText, true, []byte(strconv.Itoa(i)))
	}
	collect(func() bool { return delivered+dropped >= sent })
	elapsed := time.Since(start)
	if most := burst + int(elapsed.Seconds()*rate) + 1; delivered > most || delivered < burst {
		t.Fatalf("%d delivered in %v, want %d to %d", delivered, elapsed, burst, most)
	}
	// The first report at once and the rest together a second later; a
	// slow machine may split them further, one a second at most.
	if drops < 2 || drops > 2+int(elapsed.Seconds()) {
		t.Fatalf("%d dropped events in %v", drops, elapsed)
	}
	// Still open: control frames pass, and nothing was closed for flooding.
	tc.send(ws.OpPing, true, []byte("there?"))
	if hd, p := tc.read(); hd.OpCode != ws.OpPong || string(p) != "there?" {
		t.Fatalf("got %v %q, want the pong", hd.OpCode, p)
	}
	st := h.s.Stats()
	if st.Dropped[bus.DropRateLimit] != uint64(dropped) || st.ServerCloses["flood"] != 0 || st.Conns != 1 {
		t.Fatalf("stats: dropped %v, server closes %v, conns %d", st.Dropped, st.ServerCloses, st.Conns)
	}
}

// A client that keeps flooding after its messages are dropped is closed
// with 1008, and the service heard of every drop before the close event.
func TestFloodCloses(t *testing.T) {
	const burst, maxDrops = 2, 5
	h := startShard(t, func(c *Config) {
		c.MaxMessageRate, c.MaxMessageBurst, c.MaxMessageDrops = 1, burst, maxDrops
	})
	tc, cid := h.connect("/ws/echo")
	for range 50 {
		tc.send(ws.OpText, true, []byte("spam"))
	}
	if reason := tc.expectClose(ws.StatusPolicyViolation); reason != "message rate limit exceeded" {
		t.Fatalf("close reason %q", reason)
	}
	events := h.connEvents(cid)
	delivered, dropped := 0, 0
	for _, m := range events[:len(events)-1] {
		switch m.Header.Get(bus.HeaderEvent) {
		case bus.EventMessage:
			delivered++
		case bus.EventDropped:
			dropped += dropCount(t, m, bus.DropRateLimit)
		}
	}
	closed := events[len(events)-1]
	if closed.Header.Get(bus.HeaderCloseCode) != "1008" {
		t.Fatalf("close event %v", closed.Header)
	}
	// The drop past the limit closes; what came after it was not read.
	if dropped != maxDrops+1 || delivered > burst+1 {
		t.Fatalf("%d delivered, %d dropped; want at most %d delivered and %d dropped", delivered, dropped, burst+1, maxDrops+1)
	}
	st := h.s.Stats()
	if st.ServerCloses["flood"] != 1 || st.Dropped[bus.DropRateLimit] != uint64(dropped) {
		t.Fatalf("stats: server closes %v, dropped %v", st.ServerCloses, st.Dropped)
	}
}

// Under drop-oldest a client that does not read keeps its connection:
// when it reads again it gets whole frames (never a frame cut by a drop),
// in order, ending with the newest, and the service heard how many were
// dropped. A close-policy service on the same shard still closes.
func TestSlowPolicyDropOldest(t *testing.T) {
	h := startShard(t, func(c *Config) {
		c.Services = []string{"echo", "strict"}
		c.MaxQueue = 64 << 10
		c.SlowPolicies = map[string]SlowPolicy{"echo": SlowDropOldest}
	})
	ticker, tid := h.connect("/ws/echo")
	if e := h.command(tid, bus.CmdJoin, map[string]string{bus.HeaderRoom: "prices"}, nil); e != "" {
		t.Fatal(e)
	}
	strict := dialWS(t, h.addr, "/ws/strict")
	var sid string
	waitFor(t, "the strict connection", func() bool {
		for _, c := range h.s.snapshot() {
			if c.route.name == "strict" {
				sid = c.cid
				return true
			}
		}
		return false
	})
	if e := h.command(sid, bus.CmdJoin, map[string]string{bus.HeaderRoom: "prices"}, nil); e != "" {
		t.Fatal(e)
	}
	size := h.publishRising("prices")
	strict.expectClose(ws.StatusPolicyViolation)
	received := readRising(t, size, ticker.readMessage)
	dropped := risingCount - received
	h.awaitDropped(tid, dropped)
	st := h.s.Stats()
	if st.Dropped[bus.DropQueueFull] != uint64(dropped) || st.ServerCloses["slow_consumer"] != 1 {
		t.Fatalf("stats: dropped %v, server closes %v", st.Dropped, st.ServerCloses)
	}
	// Still open and served.
	if e := h.command(tid, bus.CmdSend, nil, []byte("still here")); e != "" {
		t.Fatal(e)
	}
	if _, p := ticker.readMessage(); string(p) != "still here" {
		t.Fatalf("got %q", p)
	}
}

// risingCount is how many messages publishRising sends.
const risingCount = 4096

// publishRising publishes risingCount numbered messages of 8 KiB to room,
// 32 MiB in all, far beyond the sockets' buffers and a test's queue, then
// "last". It returns the size of each numbered message.
func (h *harness) publishRising(room string) int {
	h.t.Helper()
	payload := bigText(8 << 10)
	for i := range risingCount {
		copy(payload, strconv.Itoa(i)+" ")
		must(h.t, h.nc.Publish(h.subj.Room(room), payload))
	}
	must(h.t, h.nc.Publish(h.subj.Room(room), []byte("last")))
	must(h.t, h.nc.Flush())
	return len(payload)
}

// readRising reads what publishRising sent, through next, until "last":
// every message whole (never a frame cut by a drop) and numbered above the
// one before. It returns how many numbered messages came, and fails when
// all of them did: then nothing was dropped.
func readRising(t testing.TB, size int, next func() (ws.OpCode, []byte)) int {
	t.Helper()
	received, prev := 0, -1
	for {
		op, p := next()
		if string(p) == "last" {
			break
		}
		seq, err := strconv.Atoi(string(p[:bytesIndex(p, ' ')]))
		if err != nil || seq <= prev || op != ws.OpText || len(p) != size {
			t.Fatalf("message %q... (%v, %d bytes) after %d", p[:min(len(p), 12)], op, len(p), prev)
		}
		prev = seq
		received++
	}
	if received == risingCount {
		t.Fatal("nothing was dropped: the test did not fill the queue")
	}
	return received
}

// awaitDropped waits until the dropped events, all for cid and for a full
// queue, report want messages.
func (h *harness) awaitDropped(cid string, want int) {
	h.t.Helper()
	dropped := 0
	deadline := time.After(10 * time.Second)
	for dropped < want {
		select {
		case m := <-h.evs:
			if m.Header.Get(bus.HeaderEvent) == bus.EventDropped {
				if m.Header.Get(bus.HeaderConn) != cid {
					h.t.Fatalf("dropped event for %s", m.Header.Get(bus.HeaderConn))
				}
				dropped += dropCount(h.t, m, bus.DropQueueFull)
			}
		case <-deadline:
			h.t.Fatalf("%d reported dropped, want %d", dropped, want)
		}
	}
	if dropped != want {
		h.t.Fatalf("%d reported dropped, want %d", dropped, want)
	}
}

func bytesIndex(p []byte, b byte) int {
	for i, c := range p {
		if c == b {
			return i
		}
	}
	return len(p)
}

// The rules of dropping on a queue: whole data frames go, oldest first,
// until the new one fits; a frame half written, the frames of a writev in
// progress, sealed records and control frames stay.
func TestDropOldestKeeps(t *testing.T) {
	h := startShard(t, func(c *Config) {
		c.MaxQueue = 100
		c.SlowPolicy = SlowDropOldest
	})
	data := func(tag byte, n int) []byte {
		return wire.AppendFrame(nil, ws.OpBinary, true, append([]byte{tag}, bigText(n-3)...))
	}
	ping := wire.AppendFrame(nil, ws.OpPing, true, nil)
	c := &conn{s: h.s, cid: "t1.9", route: h.s.routes["echo"], fd: -1}
	// step runs fn on the queue under the connection's lock and returns
	// what the queue holds, by tag ('p' for a ping).
	step := func(fn func()) string {
		c.mu.Lock()
		defer c.mu.Unlock()
		fn()
		var s []byte
		for _, f := range c.out {
			if isControl(f) {
				s = append(s, 'p')
			} else {
				s = append(s, f[2])
			}
		}
		return string(s)
	}
	// a: 30 bytes, 10 of them on the wire already.
	got := step(func() {
		c.out, c.outOff = [][]byte{data('a', 30), ping, data('b', 30), data('c', 30)}, 10
		c.outBytes = 20 + len(ping) + 30 + 30
		c.enqueueLocked(data('d', 30))
	})
	if got != "apcd" || c.outBytes != 20+len(ping)+60 {
		t.Fatalf("queue %q of %d bytes after one overflow, want apcd of %d", got, c.outBytes, 20+len(ping)+60)
	}
	// Two frames in a writev: both stay, the next data frames go.
	got = step(func() {
		c.outOff, c.inflight = 0, 2
		c.outBytes = 30 + len(ping) + 60
		c.enqueueLocked(data('e', 60))
	})
	if got != "ape" {
		t.Fatalf("queue %q, want ape", got)
	}
	// A control frame always fits; a data frame that cannot is dropped
	// and leaves the queue alone.
	got = step(func() {
		c.enqueueLocked(ping)
		c.enqueueLocked(data('f', 99))
	})
	if got != "apep" {
		t.Fatalf("queue %q, want apep", got)
	}
	// Sealed records, the head of a TLS connection's queue, stay: each
	// took a sequence number of the stream.
	got = step(func() {
		c.out, c.outOff, c.inflight, c.sealed = [][]byte{data('g', 30), data('h', 30), data('i', 30)}, 0, 0, 2
		c.outBytes = 90
		c.enqueueLocked(data('j', 30))
	})
	if got != "ghj" {
		t.Fatalf("queue %q, want ghj", got)
	}
	total := 0
	for total < 5 {
		total += dropCount(t, h.event(bus.EventDropped), bus.DropQueueFull)
	}
	if total != 5 {
		t.Fatalf("%d reported dropped, want 5 (b, c, d, f and i)", total)
	}
}

// Handshakes that trickle in are cut at the handshake timeout, however
// steadily their bytes come, and none holds a goroutine while it waits.
func TestSlowlorisHandshakes(t *testing.T) {
	h := startShard(t, func(c *Config) { c.HandshakeTimeout = 500 * time.Millisecond })
	const n = 200
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", h.addr)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		_, err = io.WriteString(c, "GET /ws/echo HTTP/1.1\r\nHost: x\r\n")
		must(t, err)
		conns[i] = c
	}
	waitFor(t, "the handshakes to wait", func() bool { return h.s.acc.Pending() == n })
	if grown := runtime.NumGoroutine() - before; grown > n/10 {
		t.Fatalf("%d goroutines more for %d handshakes waiting", grown, n)
	}
	// One byte of header every 20 ms: a head of 8 KiB would take minutes,
	// so a deadline that moved with each byte would never answer in time.
	trickler := conns[0]
	answered := make(chan *http.Response, 1)
	go func() {
		trickler.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(trickler), nil)
		if err != nil {
			close(answered)
			return
		}
		answered <- resp
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var resp *http.Response
	for resp == nil {
		select {
		case <-tick.C:
			trickler.Write([]byte("X"))
		case r, ok := <-answered:
			if !ok {
				t.Fatal("the trickling handshake got no answer")
			}
			resp = r
		}
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("trickling handshake: %d, want 408", resp.StatusCode)
	}
	for _, c := range conns[1:] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("waiting handshake: %v %v, want 408", resp, err)
		}
	}
	waitFor(t, "the timeouts to be counted", func() bool { return h.s.Stats().Rejected["timeout"] == n })
	if h.s.acc.Pending() != 0 {
		t.Fatalf("%d handshakes still pending", h.s.acc.Pending())
	}
}

// Pings spend the message rate: past it a ping gets no pong, and a ping
// flood is closed like a message flood, without dropped events (the
// service never sees pings).
func TestPingFlood(t *testing.T) {
	h := startShard(t, func(c *Config) {
		c.MaxMessageRate, c.MaxMessageBurst, c.MaxMessageDrops = 1, 3, 5
	})
	tc, cid := h.connect("/ws/echo")
	start := time.Now()
	for range 50 {
		tc.send(ws.OpPing, true, []byte("p"))
	}
	pongs := 0
	for {
		hd, p := tc.read()
		if hd.OpCode == ws.OpPong {
			pongs++
			continue
		}
		if hd.OpCode != ws.OpClose {
			t.Fatalf("got %v", hd.OpCode)
		}
		if code, reason := wire.ParseClose(p); code != ws.StatusPolicyViolation || string(reason) != "message rate limit exceeded" {
			t.Fatalf("closed with %d %q", code, reason)
		}
		break
	}
	if most := 3 + int(time.Since(start).Seconds()) + 1; pongs < 3 || pongs > most {
		t.Fatalf("%d pongs for a burst of 3, want 3 to %d", pongs, most)
	}
	tc.c.Write(wire.AppendMaskedClose(nil, testMask, 1008, ""))
	for _, m := range h.connEvents(cid) {
		if m.Header.Get(bus.HeaderEvent) == bus.EventDropped {
			t.Fatalf("dropped event for pings: %v", m.Header)
		}
	}
	if st := h.s.Stats(); st.ServerCloses["flood"] != 1 || st.Dropped[bus.DropRateLimit] != 0 {
		t.Fatalf("server closes %v, dropped %v", st.ServerCloses, st.Dropped)
	}
}

// Messages sent in the same packet as the handshake spend the rate too,
// and each is delivered or reported dropped.
func TestRateLimitBehindHandshake(t *testing.T) {
	h := startShard(t, func(c *Config) {
		c.MaxMessageRate, c.MaxMessageBurst, c.MaxMessageDrops = 1, 1, -1
	})
	c, err := net.Dial("tcp", h.addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	req := "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	b := []byte(req)
	for range 10 {
		b = append(b, wireMasked(ws.OpText, []byte("early"))...)
	}
	_, err = c.Write(b)
	must(t, err)
	delivered, dropped := 0, 0
	deadline := time.After(10 * time.Second)
	for delivered+dropped < 10 {
		select {
		case m := <-h.evs:
			switch m.Header.Get(bus.HeaderEvent) {
			case bus.EventMessage:
				delivered++
			case bus.EventDropped:
				dropped += dropCount(t, m, bus.DropRateLimit)
			}
		case <-deadline:
			t.Fatalf("%d delivered and %d reported dropped of 10", delivered, dropped)
		}
	}
	if delivered < 1 || delivered > 2 {
		t.Fatalf("%d delivered at 1 a second", delivered)
	}
}
