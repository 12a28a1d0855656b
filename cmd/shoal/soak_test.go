package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-gw/shoal/auth"
	"github.com/shoal-gw/shoal/supervisor"
)

var soakFor = flag.Duration("soak", 0, "how long TestSoak loads the gateway (0: its short form, "+soakShort.String()+")")

// soakShort is the load's length in the short form that `make test` runs.
const soakShort = 25 * time.Second

// TestSoak runs `shoal serve --workers 2 --services chat` on a nats-server
// process and loads it with everything at once for a set time: clients
// churning (chatting a little, then closing, vanishing or resetting;
// registering; connecting anonymously; never finishing a handshake),
// writers keeping a room busy, slow readers in that room, floods past the
// message rate, and in the middle NATS killed with SIGKILL and started
// again on its port and store. Afterwards each worker is back where it
// started (goroutines, heap, open files), nothing is left of the
// connections (no connection, no room), and every message whose sent
// reply came, before the restart or after, is in the history.
//
// The short form runs in `go test`; -soak sets the load's length:
//
//	go test ./cmd/shoal -run TestSoak -soak 10m -timeout 30m -v
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	dur := soakShort
	if *soakFor > 0 {
		dur = *soakFor
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < dur+3*time.Minute {
		t.Fatalf("-soak %v needs a longer -timeout: %v or more", dur, (dur + 5*time.Minute).Round(time.Minute))
	}
	ns := startNATSProcess(t)
	// The chat keeps every message of the run, so that each can be read
	// back; the writers say as fast as they are answered; accounts are
	// cheap to make.
	t.Setenv("SHOAL_SERVICE_CHAT_HISTORY", "10000000")
	t.Setenv("SHOAL_SERVICE_CHAT_RATE", "-1")
	t.Setenv("SHOAL_SERVICE_CHAT_BCRYPT_COST", "4")
	t.Setenv("SHOAL_SERVICE_CHAT_MAX_TEXT", strconv.Itoa(soakText+100))
	rate := strconv.Itoa(soakMsgRate)
	f := startServe(t, "--workers", "2", "--services", "chat", "--nats", ns.URL(),
		// Within nats-server's default max_payload of 1 MiB.
		"--max-message", "256KiB",
		"--max-msg-rate", rate, "--max-msg-burst", rate, "--max-queue", soakMaxQueue)
	key, err := auth.LoadKey(filepath.Join(f.data, "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	load := &soakLoad{base: f.ws, key: key}
	var workers map[int]supervisor.Proc
	waitUntil(t, "two workers", func() bool { workers = f.workers(); return len(workers) == 2 })
	// With an external NATS server, serve does not wait for its services
	// to subscribe: wait for the chat to greet a token connection.
	waitUntil(t, "the chat to answer", func() bool {
		c, err := load.dial(context.Background(), "hello")
		if err != nil {
			return false
		}
		defer c.end(1)
		return c.awaitWelcome() == nil
	})

	// A warm-up with the same load, so that what a worker makes once and
	// keeps (its pool's goroutines, pooled buffers, map buckets sized by
	// its busiest moment so far, its bus subscriptions) is in the start
	// figures too.
	load.run(t, 5*time.Second, nil)
	f.awaitIdle(t)
	// The least of a few readings: one may count a straggler, such as
	// the connection of the profile request before it, still closing.
	procs := f.soakProcs(t, workers)
	start := make(map[string]soakUsage)
	for i := range 3 {
		for _, p := range procs {
			u := f.usage(t, p)
			if s, ok := start[p.name]; ok && i > 0 {
				u = u.least(s)
			}
			start[p.name] = u
		}
		time.Sleep(time.Second)
	}
	upgrades := f.metricSum("shoal_upgrades_total{")

	restarts := max(1, int(dur/(5*time.Minute)))
	began := time.Now()
	load.run(t, dur, func() {
		for i := 1; i <= restarts; i++ {
			time.Sleep(time.Until(began.Add(time.Duration(i) * dur / time.Duration(restarts+1))))
			load.restarting()
			ns.kill()
			// Long enough for every client of the bus to notice it gone
			// and to try again a few times (bus.Connect: every 250ms).
			time.Sleep(time.Second)
			ns.start()
			t.Logf("NATS restarted at %v", time.Since(began).Round(time.Second))
		}
	})
	f.awaitIdle(t)
	churned := f.metricSum("shoal_upgrades_total{") - upgrades
	load.report(t, churned)

	// The load did what it is for.
	load.check(t, f)

	// No worker died or was replaced: a fresh process would hide a leak.
	if now := f.workers(); len(now) != len(workers) {
		t.Fatalf("workers %v at the end, %v at the start", now, workers)
	}
	for pid, w := range f.workers() {
		if _, ok := workers[pid]; !ok || w.Restarts != 0 {
			t.Fatalf("worker %d (slot %d, %d restarts) is not one of the workers measured at the start", pid, w.Slot, w.Restarts)
		}
	}
	f.checkUsage(t, procs, start, churned/len(workers))
	load.checkHistory(t)
}

// run starts the clients for dur, calls during (if not nil) on this
// goroutine meanwhile, and returns once every client is gone.
func (l *soakLoad) run(t *testing.T, dur time.Duration, during func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { l.churn(ctx) })
	}
	for range 2 {
		wg.Go(func() { l.write(ctx) })
		wg.Go(func() { l.flood(ctx) })
		wg.Go(func() { l.slowRead(ctx, 20*time.Second) })
	}
	if during != nil {
		during()
	}
	<-ctx.Done()
	wg.Wait()
}

// awaitIdle waits until the workers hold no connection and no room.
func (f *fleet) awaitIdle(t *testing.T) {
	t.Helper()
	waitUntil(t, "no connection and no room left", func() bool {
		return f.metricSum("shoal_connections{") == 0 && f.metricSum("shoal_rooms{") == 0
	})
}

// report logs what the load did.
func (l *soakLoad) report(t *testing.T, churned int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	before := 0
	for _, s := range l.sent {
		if s.restarts == 0 {
			before++
		}
	}
	t.Logf("load: %d WebSocket connections (%d dialed by the load), %d half handshakes, %d registered; "+
		"%d messages confirmed (%d before the NATS restart), %d live messages received; "+
		"%d hard floods (%d closed 1008), %d soft floods (%d told by a rate_limited notice, %d served again); "+
		"%d slow readers (%d closed 1008, %d ended otherwise); %d unanswered, %d unavailable, %d other answers",
		churned, l.dials.Load(), l.halfHandshakes.Load(), l.registered.Load(),
		len(l.sent), before, l.live.Load(),
		l.floods.Load(), l.floodClosed.Load(), l.softFloods.Load(), l.told.Load(), l.pongsAfter.Load(),
		l.slowHeld.Load(), l.slowClosed.Load(), l.slowEnded.Load(),
		l.timeouts.Load(), l.unavailable.Load(), l.failed.Load())
	if len(l.odd) > 0 {
		t.Logf("answers of an unexpected type: %s", strings.Join(l.odd, "; "))
	}
}

// check fails the test if a kind of client did not meet what it is
// there to meet: otherwise the end figures would prove little.
func (l *soakLoad) check(t *testing.T, f *fleet) {
	t.Helper()
	l.mu.Lock()
	var before, after int
	for _, s := range l.sent {
		if s.restarts == 0 {
			before++
		} else {
			after++
		}
	}
	restarts := l.restarts
	l.mu.Unlock()
	if before == 0 || after == 0 {
		t.Errorf("%d messages confirmed before the NATS restart and %d after: want some of each", before, after)
	}
	// Only the outage may fail a request (unanswered, or unavailable).
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d answers of an unexpected type", n)
	}
	// Every flood meets its end, but those the end of the load or a NATS
	// outage cut short: one per flooding client for each.
	short := int64(2 * (1 + restarts))
	if n, closed := l.floods.Load(), l.floodClosed.Load(); closed == 0 || n-closed > short ||
		f.metricSum(`shoal_server_closes_total{reason="flood"`) < int(closed) {
		t.Errorf("%d hard floods, %d closed with 1008", n, closed)
	}
	if f.metricSum(`shoal_messages_dropped_total{reason="rate_limit"`) == 0 {
		t.Errorf("no message was dropped for its rate")
	}
	// The chat tells a client of its dropped messages, and a client
	// that slowed down is served again.
	if n, told, served := l.softFloods.Load(), l.told.Load(), l.pongsAfter.Load(); told == 0 || served == 0 || n-told > short || n-served > short {
		t.Errorf("%d soft floods: %d told of their drops, %d served again", n, told, served)
	}
	// Nothing else closes a slow reader: it is not idle long enough, nor
	// does it flood.
	ended, slow := l.slowClosed.Load()+l.slowEnded.Load(), f.metricSum(`shoal_server_closes_total{reason="slow_consumer"`)
	if ended == 0 || int64(slow) < ended {
		t.Errorf("%d slow readers closed by the gateway, %d closed for a full queue: want some, all for their queue", ended, slow)
	}
}

// soakProc is a process whose usage the soak measures.
type soakProc struct {
	name  string // "worker 0", "supervisor"
	pprof string // the admin endpoint's path of its profiles
	pid   int
}

// soakProcs lists the workers, by slot, and the supervisor: a profile
// request it forwards must not leave anything behind in either.
func (f *fleet) soakProcs(t *testing.T, workers map[int]supervisor.Proc) []soakProc {
	var procs []soakProc
	for pid, w := range workers {
		procs = append(procs, soakProc{name: "worker " + strconv.Itoa(w.Slot), pprof: fmt.Sprintf("/debug/pprof/worker/%d/", w.Slot), pid: pid})
	}
	sort.Slice(procs, func(i, j int) bool { return procs[i].name < procs[j].name })
	return append(procs, soakProc{name: "supervisor", pprof: "/debug/pprof/", pid: f.cmd.Process.Pid})
}

// soakUsage is what a process holds.
type soakUsage struct {
	goroutines, fds                   int
	heapAlloc, heapInuse, heapObjects uint64
}

// least is each figure's smaller value of u and v.
func (u soakUsage) least(v soakUsage) soakUsage {
	return soakUsage{
		goroutines:  min(u.goroutines, v.goroutines),
		fds:         min(u.fds, v.fds),
		heapAlloc:   min(u.heapAlloc, v.heapAlloc),
		heapInuse:   min(u.heapInuse, v.heapInuse),
		heapObjects: min(u.heapObjects, v.heapObjects),
	}
}

// near reports whether u is within the slack of start.
func (u soakUsage) near(start soakUsage) bool {
	return u.goroutines <= start.goroutines+goroutineSlack && u.fds <= start.fds+fdSlack &&
		u.heapAlloc <= start.heapAlloc+heapSlack && u.heapObjects <= start.heapObjects+heapObjectSlack
}

func (u soakUsage) String() string {
	return fmt.Sprintf("%d goroutines, %d open files, heap %d KiB in use (%d KiB of %d live objects)",
		u.goroutines, u.fds, u.heapInuse>>10, u.heapAlloc>>10, u.heapObjects)
}

// adminText fetches a path of the admin endpoint.
func (f *fleet) adminText(t *testing.T, path string) string {
	t.Helper()
	resp := f.adminGet(path)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d %v %.200q", path, resp.StatusCode, err, b)
	}
	return string(b)
}

// usage reads a process's goroutines and heap from its profiles (the
// heap after two collections: the first moves what sync.Pools hold to
// their victim caches, the second frees it) and counts its open files.
func (f *fleet) usage(t *testing.T, p soakProc) soakUsage {
	t.Helper()
	var heap string
	for range 2 {
		heap = f.adminText(t, p.pprof+"heap?debug=1&gc=1")
	}
	var u soakUsage
	stat := func(name string) uint64 {
		for _, line := range strings.Split(heap, "\n") {
			if v, ok := strings.CutPrefix(line, "# "+name+" = "); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err == nil {
					return n
				}
			}
		}
		t.Fatalf("the heap profile of %s has no %s", p.name, name)
		return 0
	}
	u.heapAlloc, u.heapInuse, u.heapObjects = stat("HeapAlloc"), stat("HeapInuse"), stat("HeapObjects")
	g := f.adminText(t, p.pprof+"goroutine?debug=1")
	first, _, _ := strings.Cut(g, "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		t.Fatalf("the goroutine profile of %s begins %q", p.name, first)
	}
	u.goroutines = n
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(fds)
	return u
}

// The tolerances of checkUsage. The load churns thousands of connections
// through the workers in the short form (the test logs how many), and an
// idle process's goroutines and files are a fixed set (a worker's pool,
// poller, timing wheel, bus connection; the goroutine and the socket
// serving the profile request are in both counts). So a leak of one
// goroutine or one file per connection, or even per hundred, shows as
// far more than the slack, which only lets a straggler finish.
const (
	goroutineSlack = 3
	fdSlack        = 2
	// The live heap after two collections moves by some tens of KiB and
	// of objects from one reading to the next (the bus client's buffers,
	// the runtime's own): heapSlack and heapObjectSlack are ten times
	// that. Over the short form's churn they catch a leak of a few
	// hundred bytes per connection (checkUsage logs how many), or of one
	// small object per two connections.
	heapSlack       = 256 << 10
	heapObjectSlack = 400
)

// checkUsage waits for every process to be back near its start figures,
// and fails with its goroutines if one does not come back. perWorker is
// the connections each worker saw, about.
func (f *fleet) checkUsage(t *testing.T, procs []soakProc, start map[string]soakUsage, perWorker int) {
	t.Helper()
	t.Logf("the heap check catches a leak of %d bytes per connection or more", heapSlack/max(1, perWorker))
	deadline := time.Now().Add(time.Minute)
	for {
		var off []string
		end := make(map[string]soakUsage)
		for _, p := range procs {
			u := f.usage(t, p)
			end[p.name] = u
			if !u.near(start[p.name]) {
				off = append(off, fmt.Sprintf("%s: %v at the start, %v at the end", p.name, start[p.name], u))
			}
		}
		if len(off) == 0 {
			for _, p := range procs {
				t.Logf("%s: start %v; end %v", p.name, start[p.name], end[p.name])
			}
			return
		}
		if time.Now().After(deadline) {
			for _, p := range procs {
				t.Logf("goroutines of %s:\n%s", p.name, f.adminText(t, p.pprof+"goroutine?debug=1"))
			}
			t.Fatalf("not back near the start a minute after the load:\n%s", strings.Join(off, "\n"))
		}
		time.Sleep(time.Second)
	}
}

// checkHistory reads every room's history back through the protocol and
// fails for each confirmed message that is not in it as it was said.
func (l *soakLoad) checkHistory(t *testing.T) {
	t.Helper()
	c, err := l.dial(context.Background(), "auditor")
	if err != nil {
		t.Fatal(err)
	}
	defer c.end(0)
	if err := c.awaitWelcome(); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	sent := l.sent
	l.mu.Unlock()
	var p pacer
	rooms := make(map[string]map[uint64]uint64)
	for _, s := range sent {
		rooms[s.room] = nil
	}
	for room := range rooms {
		got := make(map[uint64]uint64)
		for after := uint64(0); ; {
			p.wait(context.Background())
			h, err := c.call(map[string]any{"type": "history", "room": room, "after": after, "limit": 100})
			if err != nil || h.Type != "history" {
				t.Fatalf("history of %s after %d: %v %s %s", room, after, err, h.Type, h.Code)
			}
			for _, m := range h.Messages {
				got[m.Seq] = textSum(m.Text)
				after = m.Seq
			}
			if !h.More || len(h.Messages) == 0 {
				break
			}
		}
		rooms[room] = got
	}
	missing := 0
	for _, s := range sent {
		if text, ok := rooms[s.room][s.seq]; !ok || text != s.text {
			if missing++; missing <= 10 {
				what := "not in the history"
				if ok {
					what = "in the history with another text"
				}
				t.Errorf("message %d in %s, confirmed after %d NATS restarts, is %s", s.seq, s.room, s.restarts, what)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d confirmed messages are not in the history", missing, len(sent))
	}
	t.Logf("all %d confirmed messages are in the history of their %d rooms", len(sent), len(rooms))
}
