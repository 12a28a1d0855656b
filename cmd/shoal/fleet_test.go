package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bench"
	"github.com/shoal-gw/shoal/bus"
)

// fleetHosts are the loopback addresses of the local fleet's hosts.
var fleetHosts = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

// localFleet is deploy/local-fleet.sh's fleet, started on free ports.
type localFleet struct {
	t       *testing.T
	dir     string
	env     []string
	port    int // every host's gateway port
	admin   int // every host's admin port
	nats    int // first NATS client port
	monitor int // first NATS monitoring port
	script  string
}

// startLocalFleet runs `deploy/local-fleet.sh up` with this test's
// binary, its own state directory and free ports, with chat on the hosts
// chatHosts names ("1 2"; "" for none). When the test ends it runs down,
// then kills whatever process group is left, and checks none was.
func startLocalFleet(t *testing.T, chatHosts string, extra ...string) *localFleet {
	t.Helper()
	exe, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = t.TempDir()
	}
	lf := &localFleet{t: t, dir: t.TempDir(), script: filepath.Join(root, "deploy", "local-fleet.sh")}
	var held []net.Listener
	lf.port = sharedFreePort(t, &held)
	lf.admin = sharedFreePort(t, &held)
	lf.nats = freeRun(t, &held)
	routes := freeRun(t, &held)
	lf.monitor = freeRun(t, &held)
	for _, l := range held {
		l.Close()
	}
	lf.env = append(os.Environ(),
		"FLEET_DIR="+lf.dir,
		"FLEET_HOSTS="+strings.Join(fleetHosts, " "),
		"FLEET_PORT="+strconv.Itoa(lf.port),
		"FLEET_ADMIN_PORT="+strconv.Itoa(lf.admin),
		"FLEET_NATS_PORT="+strconv.Itoa(lf.nats),
		"FLEET_ROUTE_PORT="+strconv.Itoa(routes),
		"FLEET_MONITOR_PORT="+strconv.Itoa(lf.monitor),
		"FLEET_CHAT_HOSTS="+chatHosts,
		"FLEET_CACHE="+filepath.Join(cache, "shoal"),
		"FLEET_EXTRA_ARGS="+strings.Join(extra, " "),
		"SHOAL_BIN="+exe,
	)
	t.Cleanup(lf.teardown)
	if out, err := lf.run(3*time.Minute, "up"); err != nil {
		t.Fatalf("local-fleet.sh up: %v\n%s", err, out)
	}
	return lf
}

// run runs the script with args and returns its output.
func (lf *localFleet) run(limit time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, lf.script, args...)
	cmd.Env = lf.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pids reads the pid files: name (n1, host2, ...) to pid.
func (lf *localFleet) pids() map[string]int {
	out := make(map[string]int)
	files, _ := filepath.Glob(filepath.Join(lf.dir, "run", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			out[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
		}
	}
	return out
}

// pid is the pid of name, which must be running.
func (lf *localFleet) pid(name string) int {
	lf.t.Helper()
	pid, ok := lf.pids()[name]
	if !ok || !alive(pid) {
		lf.t.Fatalf("%s is not running", name)
	}
	return pid
}

// teardown runs down and checks that it left nothing behind; whatever it
// did leave is killed.
func (lf *localFleet) teardown() {
	t := lf.t
	pids := lf.pids()
	out, err := lf.run(2*time.Minute, "down")
	if err != nil {
		t.Errorf("local-fleet.sh down: %v\n%s", err, out)
	}
	for name, pid := range pids {
		if groupAlive(pid) {
			t.Errorf("%s (process group %d) still running after down", name, pid)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	if t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(lf.dir, "log", "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			if len(b) > 8<<10 {
				b = b[len(b)-8<<10:]
			}
			t.Logf("%s (tail):\n%s", filepath.Base(f), b)
		}
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
}

// groupAlive reports whether a live process is left in process group pgid.
func groupAlive(pgid int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		// After the command: state, ppid, pgrp.
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) && alive(pid) {
			return true
		}
	}
	return false
}

// ws is host h's (1-based) WebSocket base URL.
func (lf *localFleet) ws(h int) string {
	return fmt.Sprintf("ws://%s:%d", fleetHosts[h-1], lf.port)
}

// wsAll is the URL list of path on every host, as --url and ?servers= take it.
func (lf *localFleet) wsAll(path string) string {
	var urls []string
	for h := range fleetHosts {
		urls = append(urls, lf.ws(h+1)+path)
	}
	return strings.Join(urls, ",")
}

// adminOf is host h's serve, for its admin endpoint.
func (lf *localFleet) adminOf(h int) *fleet {
	return &fleet{t: lf.t, admin: fmt.Sprintf("http://%s:%d", fleetHosts[h-1], lf.admin)}
}

// conns is the number of connections host h's workers hold.
func (lf *localFleet) conns(h int) int {
	return lf.adminOf(h).metricSum("shoal_connections{")
}

// natsURL is node i's (1-based) client URL.
func (lf *localFleet) natsURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", lf.nats+i-1)
}

// busClients lists the client names of every connection the NATS nodes
// that are up hold.
func (lf *localFleet) busClients() []string {
	var names []string
	for i := range 3 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz?limit=4096", lf.monitor+i))
		if err != nil {
			continue
		}
		var cz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&cz)
		resp.Body.Close()
		for _, c := range cz.Conns {
			names = append(names, c.Name)
		}
	}
	return names
}

// killHost kills host h's whole process group with -9 and returns once no
// NATS node holds a connection of its workers or services any more, so
// that nothing is still routed to them; it returns the time of the kill.
func (lf *localFleet) killHost(t *testing.T, h int) time.Time {
	t.Helper()
	name := fmt.Sprintf("host%d", h)
	var gone []string
	for _, p := range lf.adminOf(h).procs() {
		switch p.Role {
		case "worker":
			gone = append(gone, "shoal-worker-"+p.Shard)
		case "service":
			gone = append(gone, bus.ServiceClientName(p.Service, p.PID))
		}
	}
	killed := time.Now()
	if err := syscall.Kill(-lf.pid(name), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	defer waitLong(t, name+"'s bus connections gone", time.Minute, func() bool {
		clients := lf.busClients()
		for _, g := range gone {
			if slices.Contains(clients, g) {
				return false
			}
		}
		return true
	})
	return killed
}

// logCount counts records with message msg in the log of name (host2, n1).
func (lf *localFleet) logCount(name, msg string) int {
	b, _ := os.ReadFile(filepath.Join(lf.dir, "log", name+".log"))
	return bytes.Count(b, []byte(`"msg":"`+msg+`"`))
}

// sharedFreePort finds a port free on every fleet host address and holds
// it in held until the caller releases it.
func sharedFreePort(t *testing.T, held *[]net.Listener) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", fleetHosts[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{l}
		for _, h := range fleetHosts[1:] {
			if l2, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port))); err == nil {
				ls = append(ls, l2)
			}
		}
		if len(ls) == len(fleetHosts) {
			*held = append(*held, ls...)
			return port
		}
		for _, l := range ls {
			l.Close()
		}
	}
	t.Fatal("no port free on every fleet address")
	return 0
}

// freeRun finds three consecutive ports free on 127.0.0.1, one per NATS
// node, and holds them in held.
func freeRun(t *testing.T, held *[]net.Listener) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{l}
		for p := base + 1; p < base+3 && p < 65536; p++ {
			if l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
				ls = append(ls, l2)
			}
		}
		if len(ls) == 3 {
			*held = append(*held, ls...)
			return base
		}
		for _, l := range ls {
			l.Close()
		}
	}
	t.Fatal("no three consecutive free ports")
	return 0
}

// asyncBench runs shoal bench in this process until stop.
type asyncBench struct {
	cancel context.CancelFunc
	done   chan struct{}
	out    bytes.Buffer
	rep    *bench.Report
	err    error
}

func startBench(args ...string) *asyncBench {
	ctx, cancel := context.WithCancel(context.Background())
	b := &asyncBench{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.rep, b.err = bench.Main(ctx, bench.Config{Args: args, Stdout: &b.out, Stderr: &b.out})
	}()
	return b
}

// wait waits for the run to end by itself.
func (b *asyncBench) wait(t *testing.T, limit time.Duration) *bench.Report {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(limit):
		b.cancel()
		<-b.done
		t.Fatalf("bench still running after %v\n%s", limit, b.out.String())
	}
	if b.rep == nil {
		t.Fatalf("bench: %v\n%s", b.err, b.out.String())
	}
	return b.rep
}

// stop cuts the run short and returns its report.
func (b *asyncBench) stop(t *testing.T) *bench.Report {
	t.Helper()
	b.cancel()
	return b.wait(t, time.Minute)
}

// TestLocalFleet runs deploy/local-fleet.sh's fleet for real: three NATS
// nodes in a JetStream cluster and three shoal hosts on it, chat on hosts
// 1 and 2. Status shows every part. One bus spans the hosts: a broadcast
// reaches the clients of every host, and users of host 1 and host 3 chat
// in one room, on a stream and buckets of three replicas. The NATS node
// leading the chat's history is killed with -9 under chat and echo
// traffic: no stored message is lost and no client is dropped, as the
// hosts reconnect to the other nodes. Host 2 is killed with -9: its
// clients reconnect to the next host of their list (the bench's --url,
// the page's servers), a chat user resumes by seq with no gap and no
// duplicate, and its users leave presence within three heartbeats. down
// leaves nothing running.
func TestLocalFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a fleet of processes")
	}
	lf := startLocalFleet(t, "1 2", "--drain-window", "500ms")
	services := []string{"", "echo,chat", "echo,chat", "echo"}

	out, err := lf.run(time.Minute, "status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"3 of 3 nodes running", "cluster size 3", "routed to 2 peers"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for h := 1; h <= 3; h++ {
		for w := range 2 {
			if want := fmt.Sprintf("shard host%d-%d-", h, w); !strings.Contains(out, want) {
				t.Errorf("status lacks worker %d of host%d:\n%s", w, h, out)
			}
		}
		if strings.Contains(services[h], "chat") && !strings.Contains(out, "    service chat 0  pid") {
			t.Errorf("status lacks host%d's chat instance:\n%s", h, out)
		}
	}

	// One bus for the fleet: a broadcast published on the third node
	// reaches a client of every host.
	clients := make([]*client, 3)
	for h := range clients {
		clients[h] = dial(t, lf.ws(h+1)+"/ws/echo")
		if err := clients[h].echo(ws.OpText, []byte("hello host")); err != nil {
			t.Fatalf("echo on host%d: %v", h+1, err)
		}
	}
	nc, err := nats.Connect(lf.natsURL(3) + "," + lf.natsURL(2) + "," + lf.natsURL(1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(bus.Subjects{}.All(), []byte("to everyone")); err != nil {
		t.Fatal(err)
	}
	for h, c := range clients {
		c.c.SetDeadline(time.Now().Add(10 * time.Second))
		got, _, err := wsutil.ReadServerData(c.rw)
		if err != nil || string(got) != "to everyone" {
			t.Fatalf("host%d's client: %q %v, want the broadcast", h+1, got, err)
		}
	}
	waitLong(t, "status to count each host's client", time.Minute, func() bool {
		out, _ = lf.run(time.Minute, "status")
		for h := 1; h <= 3; h++ {
			if !strings.Contains(out, fmt.Sprintf("host%d  pid %d  %s  services %s  connections 1", h, lf.pid(fmt.Sprintf("host%d", h)), lf.ws(h), services[h])) {
				return false
			}
		}
		return true
	})
	for _, c := range clients {
		c.c.Close()
	}

	alice, bob := lf.chatAcrossHosts(t, nc)

	// kill -9 of the NATS node leading the chat's history, under chat and
	// echo traffic.
	echo := startBench("echo", "--url", lf.wsAll("/ws/echo"), "--conns", "60", "--rate", "300",
		"--msg-rate", "200", "--duration", "8s", "--size", "64")
	waitLong(t, "echo traffic on every host", time.Minute, func() bool { return lf.conns(2) >= 20 && lf.conns(3) >= 21 })
	reconnectsBefore := 0
	for h := 1; h <= 3; h++ {
		reconnectsBefore += lf.logCount(fmt.Sprintf("host%d", h), "bus reconnected")
	}
	lf.chatThroughNATSLoss(t, nc, alice, bob)
	rep := echo.wait(t, 2*time.Minute)
	reconnects := -reconnectsBefore
	for h := 1; h <= 3; h++ {
		reconnects += lf.logCount(fmt.Sprintf("host%d", h), "bus reconnected")
	}
	if reconnects == 0 {
		t.Error("no host process logged a bus reconnect after its NATS node was killed")
	}
	if c := rep.Conns; c.Established != 60 || c.Dropped != 0 || c.Failed != 0 {
		t.Fatalf("echo through the loss of a NATS node: %+v\n%s", c, echo.out.String())
	}
	// Echoes in flight on the dead node are gone (echo keeps nothing),
	// but the traffic goes on: the last seconds saw echoes.
	tl := rep.Timeline
	if len(tl) < 3 || tl[len(tl)-3].Received == 0 {
		t.Fatalf("no echoes in the last seconds after the node died:\n%s", echo.out.String())
	}
	rtt := rep.Latency["rtt"]
	t.Logf("echo through the loss of a NATS node: %d of %d received, %d bus reconnects, round trip p99 %dµs max %dµs",
		rep.Messages.Received, rep.Messages.Expected, reconnects, rtt.P99Us, rtt.MaxUs)
	if out, err := lf.run(2*time.Minute, "up"); err != nil || !strings.Contains(out, "nats n") {
		t.Fatalf("up after the node died: %v\n%s", err, out)
	}

	// kill -9 of a whole host, with a chat instance on it, under load from
	// shoal bench connect --reconnect and while alice talks.
	var connect *asyncBench
	// The chat users connected by then: alice on host1, dave and ghost on
	// host2, bob on host3.
	chatUsers := [4]int{0, 1, 2, 1}
	lf.chatThroughHostLoss(t, alice, bob, func() time.Time {
		connect = startBench("connect", "--url", lf.wsAll("/ws/echo"), "--conns", "90", "--rate", "300", "--hold", "10m", "--reconnect")
		waitLong(t, "30 bench clients on every host", time.Minute, func() bool {
			return lf.conns(1) == chatUsers[1]+30 && lf.conns(2) == chatUsers[2]+30 && lf.conns(3) == chatUsers[3]+30
		})
		return lf.killHost(t, 2)
	})
	// Every bench client is back, host2's on host3 (the next address of
	// their list), and dave too.
	waitLong(t, "host2's clients on host3", time.Minute, func() bool {
		return lf.conns(1) == chatUsers[1]+30 && lf.conns(3) == chatUsers[3]+60+1
	})
	rep = connect.stop(t)
	if c := rep.Conns; c.Established != 90 || c.Reconnects != 30 || c.Failed != 0 {
		t.Fatalf("clients of a dead host: %+v, want 90 established, 30 reconnected, none failed\n%s", c, connect.out.String())
	}
	if out, err := lf.run(2*time.Minute, "up"); err != nil || !strings.Contains(out, "shoal host2") {
		t.Fatalf("up after the host died: %v\n%s", err, out)
	}
}
