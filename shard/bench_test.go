package shard

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/acceptor/tlstest"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// benchConns is the connection count of the many-connection benchmarks;
// SHOAL_BENCH_CONNS lowers it for a quick run.
func benchConns(b *testing.B) int {
	b.Helper()
	v := os.Getenv("SHOAL_BENCH_CONNS")
	if v == "" {
		return 10000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("SHOAL_BENCH_CONNS=%q", v)
	}
	return n
}

// benchWait bounds every wait of the benchmarks: a lost message fails the
// run instead of hanging it.
const benchWait = 2 * time.Minute

// counter is a count a benchmark can wait on.
type counter struct {
	n      atomic.Int64
	notify chan struct{}
}

func newCounter() *counter { return &counter{notify: make(chan struct{}, 1)} }

func (c *counter) add(d int64) {
	c.n.Add(d)
	c.signal()
}

func (c *counter) store(v int64) {
	c.n.Store(v)
	c.signal()
}

func (c *counter) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// wait returns once the count reaches target, or false after benchWait or
// when stop is closed.
func (c *counter) wait(target int64, stop <-chan struct{}) bool {
	deadline := time.NewTimer(benchWait)
	defer deadline.Stop()
	for c.n.Load() < target {
		select {
		case <-c.notify:
		case <-stop:
			return c.n.Load() >= target
		case <-deadline.C:
			return false
		}
	}
	return true
}

// drainEvents empties the harness's event channel for the rest of the
// benchmark, which would otherwise fill and make NATS drop and complain,
// and passes on the ids of opened connections when opens is not nil.
func (h *harness) drainEvents(b *testing.B, opens chan<- string) {
	b.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-h.evs:
				if opens != nil && m.Header.Get(bus.HeaderEvent) == bus.EventOpen {
					opens <- m.Header.Get(bus.HeaderConn)
				}
			case <-stop:
				return
			}
		}
	}()
	b.Cleanup(func() {
		close(stop)
		<-done
	})
}

// countMessages counts the message events on the service's subject with a
// subscription of its own, which queues without bound instead of dropping.
func (h *harness) countMessages(b *testing.B) *counter {
	b.Helper()
	msgs := newCounter()
	sub, err := h.nc.Subscribe(h.subj.Service("echo"), func(m *nats.Msg) {
		// Parsed, not expanded: the count must not add the header form's
		// allocations back to the path it measures.
		if c, err := bus.ParseCompact(m.Data); m.Header == nil && err == nil && c.Kind == bus.CompactMessage {
			msgs.add(1)
		}
	})
	must(b, err)
	must(b, sub.SetPendingLimits(-1, -1))
	must(b, h.nc.Flush())
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	return msgs
}

// BenchmarkReadPath is the inbound cost of one client message: frame in,
// message event out on the bus. The client writes ahead as far as TCP lets
// it; the run ends when the last event has arrived.
func BenchmarkReadPath(b *testing.B) {
	benchReadPath(b, func(c *Config) { c.MaxMessageRate = -1 })
}

// BenchmarkReadPath_RateLimited is the same with a message rate limit on,
// high enough never to refuse: what the token bucket costs a message.
func BenchmarkReadPath_RateLimited(b *testing.B) {
	benchReadPath(b, func(c *Config) { c.MaxMessageRate, c.MaxMessageBurst = 1<<30, 1<<30 })
}

func benchReadPath(b *testing.B, mod func(*Config)) {
	b.ReportAllocs()
	h := startShard(b, mod)
	// As if the echo service had sent a compact send: events go compact,
	// the form a current service gets.
	h.s.routes["echo"].compact.Store(true)
	tc, _ := h.connect("/ws/echo")
	h.drainEvents(b, nil)
	events := h.countMessages(b)
	// Frames go out in batches so that the client's syscalls do not
	// dominate what is measured.
	const batch = 256
	frame := wire.AppendMaskedFrame(nil, ws.OpText, true, testMask, bigText(64))
	block := make([]byte, 0, batch*len(frame))
	for range batch {
		block = append(block, frame...)
	}
	base := events.n.Load()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		k := min(batch, b.N-sent)
		tc.raw(block[:k*len(frame)])
		sent += k
	}
	if !events.wait(base+int64(b.N), nil) {
		b.Fatalf("%d of %d message events arrived; shard stats %+v", events.n.Load()-base, b.N, h.s.Stats())
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkReadPath_Echo is one round trip: client to shard to an echo
// responder on the bus and back to the client.
func BenchmarkReadPath_Echo(b *testing.B) {
	b.ReportAllocs()
	h := startShard(b, func(c *Config) { c.MaxMessageRate = -1 })
	h.echoService()
	tc, _ := h.connect("/ws/echo")
	h.drainEvents(b, nil)
	frame := wire.AppendMaskedFrame(nil, ws.OpText, true, testMask, bigText(64))
	b.ResetTimer()
	for range b.N {
		tc.raw(frame)
		if _, p := tc.readMessage(); len(p) != 64 {
			b.Fatalf("echo of %d bytes", len(p))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// benchChild is the client process of the many-connection benchmarks: see
// TestBenchChild.
type benchChild struct {
	b      *testing.B
	cmd    *exec.Cmd
	stdin  *os.File
	frames *counter // data frames received over all connections
	ready  chan struct{}
	stats  chan [2]int64
	exited chan struct{}
	mu     sync.Mutex
	failed string
}

// startChild starts a process holding count connections to addr, and
// kills it when the benchmark ends.
func startChild(b *testing.B, addr string, count int) *benchChild {
	b.Helper()
	repR, repW, err := os.Pipe()
	must(b, err)
	inR, inW, err := os.Pipe()
	must(b, err)
	ch := &benchChild{
		b:      b,
		stdin:  inW,
		frames: newCounter(),
		ready:  make(chan struct{}),
		stats:  make(chan [2]int64, 1),
		exited: make(chan struct{}),
	}
	ch.cmd = exec.Command(os.Args[0], "-test.run=^TestBenchChild$", "-test.count=1")
	ch.cmd.Env = append(os.Environ(), benchChildEnv+"="+addr+","+strconv.Itoa(count))
	ch.cmd.Stdin = inR
	ch.cmd.Stderr = os.Stderr
	ch.cmd.ExtraFiles = []*os.File{repW}
	if err := ch.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// Only the child holds these ends now, so its exit ends the report
	// stream and the parent's close of stdin ends the child.
	repW.Close()
	inR.Close()
	read := make(chan struct{})
	go func() {
		defer close(read)
		ch.readReports(repR)
	}()
	go func() {
		<-read
		_ = ch.cmd.Wait()
		close(ch.exited)
	}()
	b.Cleanup(func() {
		_ = ch.cmd.Process.Kill()
		inW.Close()
		<-ch.exited
		repR.Close()
	})
	return ch
}

func (ch *benchChild) readReports(r *os.File) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		words := strings.Fields(sc.Text())
		if len(words) == 0 {
			continue
		}
		switch words[0] {
		case childReady:
			close(ch.ready)
		case childTotal:
			if n, err := strconv.ParseInt(words[1], 10, 64); err == nil {
				ch.frames.store(n)
			}
		case childStats:
			lo, _ := strconv.ParseInt(words[1], 10, 64)
			hi, _ := strconv.ParseInt(words[2], 10, 64)
			ch.stats <- [2]int64{lo, hi}
		case childFail:
			ch.mu.Lock()
			ch.failed = strings.Join(words[1:], " ")
			ch.mu.Unlock()
		}
	}
}

// fatal fails the benchmark with the child's own error when it has one.
func (ch *benchChild) fatal(format string, args ...any) {
	ch.b.Helper()
	ch.mu.Lock()
	failed := ch.failed
	ch.mu.Unlock()
	if failed != "" {
		format += " (client process: %s)"
		args = append(args, failed)
	}
	ch.b.Fatalf(format, args...)
}

// waitReady waits until every connection of the child is upgraded and the
// shard holds all of them.
func (ch *benchChild) waitReady(h *harness, count int) {
	ch.b.Helper()
	select {
	case <-ch.ready:
	case <-ch.exited:
		ch.fatal("client process exited before connecting")
	case <-time.After(benchWait):
		ch.fatal("client process did not connect")
	}
	deadline := time.Now().Add(benchWait)
	for h.s.Conns() != count {
		if time.Now().After(deadline) {
			ch.fatal("shard holds %d connections, want %d", h.s.Conns(), count)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFrames waits until the child has received target data frames.
func (ch *benchChild) waitFrames(target int64) {
	ch.b.Helper()
	if !ch.frames.wait(target, ch.exited) {
		ch.fatal("client process received %d data frames, want %d", ch.frames.n.Load(), target)
	}
}

// perConn asks the child for the fewest and most data frames one of its
// connections received.
func (ch *benchChild) perConn() (lo, hi int64) {
	ch.b.Helper()
	if _, err := ch.stdin.WriteString(childStats + "\n"); err != nil {
		ch.b.Fatal(err)
	}
	select {
	case s := <-ch.stats:
		return s[0], s[1]
	case <-ch.exited:
		ch.fatal("client process exited")
	case <-time.After(benchWait):
		ch.fatal("client process did not answer")
	}
	return 0, 0
}

// BenchmarkFanout10k publishes to one room whose 10 000 members are real
// TCP WebSocket connections on one shard; one op is one published message,
// delivered to every member.
func BenchmarkFanout10k(b *testing.B) {
	count := benchConns(b)
	h := startShard(b, func(c *Config) { c.MaxConnsPerIP = 20000 })
	benchFanout(b, h, count, func() *benchChild { return startChild(b, h.addr, count) })
}

// BenchmarkFanoutTLS10k is BenchmarkFanout10k with every member on TLS:
// the frame is built once, but sealed once per member.
func BenchmarkFanoutTLS10k(b *testing.B) {
	count := benchConns(b)
	h, caFile := startTLSBenchShard(b)
	benchFanout(b, h, count, func() *benchChild { return startChild(b, h.addr+",tls="+caFile, count) })
}

// startTLSBenchShard starts a shard on a TLS port with a certificate of a
// CA made for the benchmark, whose PEM file it returns for the client.
func startTLSBenchShard(b *testing.B) (*harness, string) {
	ca := tlstest.NewCA(b, "bench CA")
	dir := b.TempDir()
	leaf := ca.Issue(b, dir, "server", "127.0.0.1")
	keys, err := acceptor.LoadKeyPair(leaf.CertFile, leaf.KeyFile)
	must(b, err)
	h := startShard(b, func(c *Config) {
		c.MaxConnsPerIP = 20000
		c.TLS = acceptor.ServerTLSConfig(keys)
	})
	return h, ca.WriteCA(b, dir)
}

func benchFanout(b *testing.B, h *harness, count int, start func() *benchChild) {
	opens := make(chan string, count)
	h.drainEvents(b, opens)
	ch := start()
	ch.waitReady(h, count)

	const room = "bench"
	ids := make([]string, 0, count)
	deadline := time.After(benchWait)
	for len(ids) < count {
		select {
		case id := <-opens:
			ids = append(ids, id)
		case <-deadline:
			b.Fatalf("%d open events, want %d", len(ids), count)
		}
	}
	// Joins are applied in order, so the answer to the last one means all
	// the others are applied too.
	for _, id := range ids[:count-1] {
		m := nats.NewMsg(h.subj.Shard("t1"))
		m.Header.Set(bus.HeaderCmd, bus.CmdJoin)
		m.Header.Set(bus.HeaderConn, id)
		m.Header.Set(bus.HeaderRoom, room)
		must(b, h.nc.PublishMsg(m))
	}
	if e := h.command(ids[count-1], bus.CmdJoin, map[string]string{bus.HeaderRoom: room}, nil); e != "" {
		b.Fatalf("join: %s", e)
	}
	// A first message proves that every connection is a member.
	payload := bigText(128)
	must(b, h.nc.Publish(h.subj.Room(room), payload))
	ch.waitFrames(int64(count))
	published := int64(1)

	b.Run(fmt.Sprintf("members=%d", count), func(b *testing.B) {
		b.ReportAllocs()
		// The shard's inbox holds 64Ki messages and drops beyond that:
		// the publisher keeps a bounded number in flight.
		const window = 256
		subject := h.subj.Room(room)
		base := published
		b.ResetTimer()
		for i := range int64(b.N) {
			if i >= window {
				ch.waitFrames((base + i - window) * int64(count))
			}
			must(b, h.nc.Publish(subject, payload))
		}
		must(b, h.nc.Flush())
		published += int64(b.N)
		ch.waitFrames(published * int64(count))
		b.StopTimer()
		b.ReportMetric(float64(b.N)*float64(count)/b.Elapsed().Seconds(), "deliveries/s")
	})

	if lo, hi := ch.perConn(); lo != published || hi != published {
		b.Fatalf("data frames per connection: %d to %d, want %d each", lo, hi, published)
	}
}

// BenchmarkIdleConns10k is what 10 000 idle WebSocket connections cost
// the shard's process in heap and stack, and in goroutines.
func BenchmarkIdleConns10k(b *testing.B) {
	count := benchConns(b)
	h := startShard(b, func(c *Config) { c.MaxConnsPerIP = 20000 })
	benchIdle(b, h, count, func() *benchChild { return startChild(b, h.addr, count) })
}

// BenchmarkIdleTLSConns10k is BenchmarkIdleConns10k over TLS (wss://):
// each connection also holds its crypto/tls state, but still no goroutine.
func BenchmarkIdleTLSConns10k(b *testing.B) {
	count := benchConns(b)
	h, caFile := startTLSBenchShard(b)
	benchIdle(b, h, count, func() *benchChild { return startChild(b, h.addr+",tls="+caFile, count) })
}

func benchIdle(b *testing.B, h *harness, count int, start func() *benchChild) {
	opens := make(chan string, count)
	h.drainEvents(b, opens)

	gc := func() runtime.MemStats {
		// Twice: pooled buffers survive one collection.
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms
	}
	before := gc()
	goroutines := runtime.NumGoroutine()

	ch := start()
	ch.waitReady(h, count)
	deadline := time.After(benchWait)
	for range count {
		select {
		case <-opens:
		case <-deadline:
			b.Fatal("open events missing")
		}
	}
	after := gc()
	// The child's report reader and waiter are the benchmark's, not the
	// connections'.
	const ownGoroutines = 2
	perConnG := float64(runtime.NumGoroutine()-goroutines-ownGoroutines) / float64(count)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	stack := int64(after.StackInuse) - int64(before.StackInuse)

	b.ReportAllocs()
	for b.Loop() {
	}
	b.ReportMetric(float64(heap+stack)/float64(count), "bytes/conn")
	b.ReportMetric(float64(heap)/float64(count), "heap-bytes/conn")
	b.ReportMetric(float64(stack)/float64(count), "stack-bytes/conn")
	b.ReportMetric(perConnG, "goroutines/conn")
	if h.s.Conns() != count {
		b.Fatalf("shard holds %d connections after the run, want %d", h.s.Conns(), count)
	}
}
