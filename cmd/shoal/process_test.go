package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/supervisor"
)

// binary builds the shoal binary once for the process tests.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "shoal-bin")
	if err != nil {
		return "", err
	}
	exe := filepath.Join(dir, "shoal")
	out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return exe, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if exe, err := binary(); err == nil {
		os.RemoveAll(filepath.Dir(exe))
	}
	os.Exit(code)
}

// fleet is a running `shoal serve`.
type fleet struct {
	t     *testing.T
	cmd   *exec.Cmd
	ws    string // ws://host:port
	admin string // http://host:port
	nats  string // the bus's client URL
	data  string // the --data directory
	exit  chan error
	// adminToken is the admin endpoint's bearer token, if it wants one.
	adminToken string

	logMu sync.Mutex
	logs  bytes.Buffer // serve's output, a JSON record per line
}

// adminGet fetches a path of the admin endpoint.
func (f *fleet) adminGet(path string) *http.Response {
	f.t.Helper()
	req, err := http.NewRequest("GET", f.admin+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if f.adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+f.adminToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

func startServe(t *testing.T, args ...string) *fleet {
	t.Helper()
	exe, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return startServeExe(t, exe, args...)
}

// startServeExe runs `exe serve` with the test's addresses and args.
func startServeExe(t *testing.T, exe string, args ...string) *fleet {
	t.Helper()
	data := t.TempDir()
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--admin", "127.0.0.1:0", "--data", data, "--log-format", "json"}, args...)
	cmd := exec.Command(exe, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, cmd: cmd, data: data, exit: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			f.logMu.Lock()
			f.logs.Write(sc.Bytes())
			f.logs.WriteByte('\n')
			f.logMu.Unlock()
			var rec struct{ Msg, WS, Admin, NATS string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "shoal serving" {
				f.ws = strings.TrimSuffix(rec.WS, "/ws/<service>")
				f.admin = rec.Admin
				f.nats = rec.NATS
				close(ready)
			}
		}
		f.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
		if t.Failed() {
			f.logMu.Lock()
			t.Logf("shoal serve log:\n%s", f.logs.String())
			f.logMu.Unlock()
		}
	})
	select {
	case <-ready:
	case err := <-f.exit:
		t.Fatalf("shoal serve exited before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("shoal serve did not start within 30s")
	}
	return f
}

// logCount counts serve's log records whose message is msg.
func (f *fleet) logCount(msg string) int {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	n := 0
	for _, line := range strings.Split(f.logs.String(), "\n") {
		var rec struct{ Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

// waitExit waits for shoal serve to exit, after a SIGTERM, with status 0.
func (f *fleet) waitExit() {
	f.t.Helper()
	select {
	case err := <-f.exit:
		if err != nil {
			f.t.Fatalf("shoal serve exited with %v, want 0", err)
		}
	case <-time.After(30 * time.Second):
		f.t.Fatal("shoal serve did not exit within 30s of SIGTERM")
	}
}

func (f *fleet) procs() []supervisor.Proc {
	f.t.Helper()
	resp := f.adminGet("/procs")
	defer resp.Body.Close()
	var ps []supervisor.Proc
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		f.t.Fatal(err)
	}
	return ps
}

func (f *fleet) workers() map[int]supervisor.Proc {
	out := make(map[int]supervisor.Proc)
	for _, p := range f.procs() {
		if p.Role == "worker" {
			out[p.PID] = p
		}
	}
	return out
}

func (f *fleet) metrics() string {
	f.t.Helper()
	resp := f.adminGet("/metrics")
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// watch collects the events shards publish to a service, beside the
// service itself.
func (f *fleet) watch(service string) <-chan *nats.Msg {
	f.t.Helper()
	nc, err := nats.Connect(f.nats)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(nc.Close)
	events := make(chan *nats.Msg, 256)
	bustest.Subscribe(f.t, nc, bus.Subjects{}.Service(service), events)
	if err := nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
	return events
}

// metricSum adds up the samples of the series starting with prefix.
func (f *fleet) metricSum(prefix string) int {
	sum := 0.0
	for _, line := range strings.Split(f.metrics(), "\n") {
		if strings.HasPrefix(line, prefix) {
			if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return int(sum)
}

type client struct {
	c  net.Conn
	rw io.ReadWriter
}

func dial(t *testing.T, url string) *client {
	t.Helper()
	return dialWith(t, url, ws.DefaultDialer)
}

func dialWith(t *testing.T, url string, d ws.Dialer) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, br, _, err := d.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	return &client{c: c, rw: struct {
		io.Reader
		io.Writer
	}{r, c}}
}

func (c *client) echo(op ws.OpCode, msg []byte) error {
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wsutil.WriteClientMessage(c.c, op, msg); err != nil {
		return err
	}
	got, gop, err := wsutil.ReadServerData(c.rw)
	if err != nil {
		return err
	}
	if gop != op || !bytes.Equal(got, msg) {
		return fmt.Errorf("echo of %v %q came back as %v %q", op, msg, gop, got)
	}
	return nil
}

// localPort is the client's port: the remote port of its server socket.
func (c *client) localPort() int { return c.c.LocalAddr().(*net.TCPAddr).Port }

// socketInodes lists the socket inodes pid holds open.
func socketInodes(pid int) map[string]bool {
	out := make(map[string]bool)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			out[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	return out
}

// owners maps each client, by its index in ports (the clients' own
// ports), to the pid of the worker holding its connection to port.
func owners(t *testing.T, workers map[int]supervisor.Proc, port int, ports []int) map[int]int {
	t.Helper()
	owner := make(map[int]int)
	socks := tcpSockets(t)
	for pid := range workers {
		inodes := socketInodes(pid)
		byPort := make(map[int]bool)
		for _, s := range socks {
			if !s.listen && s.local == port && inodes[s.inode] {
				byPort[s.remote] = true
			}
		}
		for i, p := range ports {
			if byPort[p] {
				owner[i] = pid
			}
		}
	}
	return owner
}

// tcpSocket is a line of /proc/net/tcp.
type tcpSocket struct {
	local, remote int // ports
	listen        bool
	established   bool
	inode         string
}

func tcpSockets(t *testing.T) []tcpSocket {
	t.Helper()
	socks, err := readTCPSockets()
	if err != nil {
		t.Fatal(err)
	}
	return socks
}

// readTCPSockets lists the IPv4 TCP sockets of the machine.
func readTCPSockets() ([]tcpSocket, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	var out []tcpSocket
	port := func(hexAddr string) int {
		i := strings.LastIndexByte(hexAddr, ':')
		p, _ := strconv.ParseInt(hexAddr[i+1:], 16, 32)
		return int(p)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		out = append(out, tcpSocket{local: port(f[1]), remote: port(f[2]), listen: f[3] == "0A", established: f[3] == "01", inode: f[9]})
	}
	return out, nil
}

// TestServingMeansServicesListen: once serve says it serves, every
// bundled service is subscribed, so a client's first message is not
// dropped by a bus with nobody listening.
func TestServingMeansServicesListen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "1", "--services", "echo,fanout")
	nc, err := nats.Connect(f.nats)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, name := range []string{"echo", "fanout"} {
		// A request with no subscriber fails at once with no responders; a
		// subscribed service skips this empty probe as a malformed event,
		// so the request times out instead.
		_, err := nc.Request(bus.Subjects{}.Service(name), nil, 200*time.Millisecond)
		if errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("service %s not subscribed when serve announced itself", name)
		} else if !errors.Is(err, nats.ErrTimeout) {
			t.Errorf("probe of %s: %v, want a timeout", name, err)
		}
	}
	// Every child runs with its share of the CPUs, or with the GOMAXPROCS
	// the environment set, which it inherits.
	want := os.Getenv("GOMAXPROCS")
	if want == "" {
		want = strconv.Itoa(supervisor.ProcsShare(supervisor.AvailableCPUs(), 1))
	}
	children := 0
	for _, p := range f.procs() {
		if p.Role == "supervisor" {
			continue
		}
		children++
		env, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/environ")
		if err != nil {
			t.Fatal(err)
		}
		if got := envValue(env, "GOMAXPROCS"); got != want {
			t.Errorf("%s pid %d: GOMAXPROCS %q, want %q", p.Role, p.PID, got, want)
		}
	}
	if children != 3 {
		t.Errorf("%d children, want a worker and two services", children)
	}
	f.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-f.exit; err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// envValue returns the value of key in a /proc/<pid>/environ image.
func envValue(environ []byte, key string) string {
	for _, kv := range strings.Split(string(environ), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestServeFleet runs the real process tree: a supervisor, two workers
// sharing one port, the echo service, and the embedded NATS server.
func TestServeFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "2", "--services", "echo", "--drain-timeout", "5s", "--max-message", "12MiB")
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(f.ws, "ws://"))
	port, _ := strconv.Atoi(portStr)

	// Both workers are up and each holds its own listening socket on the port.
	var workers map[int]supervisor.Proc
	waitUntil(t, "two workers", func() bool { workers = f.workers(); return len(workers) == 2 })
	socks := tcpSockets(t)
	for pid := range workers {
		inodes := socketInodes(pid)
		n := 0
		for _, s := range socks {
			if s.listen && s.local == port && inodes[s.inode] {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("worker %d holds %d listening sockets on port %d, want 1", pid, n, port)
		}
	}

	const n = 300
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, f.ws+"/ws/echo")
	}
	for i, c := range clients {
		if err := c.echo(ws.OpText, []byte("hello "+strconv.Itoa(i)+" ✓")); err != nil {
			t.Fatalf("client %d text: %v", i, err)
		}
		if err := c.echo(ws.OpBinary, []byte{0, byte(i), 0xff}); err != nil {
			t.Fatalf("client %d binary: %v", i, err)
		}
	}

	// A message larger than the bus's default max_payload: the embedded
	// server's limit follows --max-message.
	big := bytes.Repeat([]byte{0xab}, 9<<20)
	if err := clients[0].echo(ws.OpBinary, big); err != nil {
		t.Fatalf("9 MiB echo: %v", err)
	}

	// Which worker holds which client.
	ports := make([]int, n)
	for i, c := range clients {
		ports[i] = c.localPort()
	}
	owner := owners(t, workers, port, ports)
	held := make(map[int]int)
	for _, pid := range owner {
		held[pid]++
	}
	if len(owner) != n || len(held) != 2 {
		t.Fatalf("clients per worker: %v (%d of %d found); want both workers holding clients", held, len(owner), n)
	}
	t.Logf("clients per worker: %v", held)
	// One scrape covers every worker: the connections add up to the clients.
	waitUntil(t, "/metrics to count every client", func() bool {
		return f.metricSum("shoal_connections{") == n && f.metricSum("shoal_upgrades_total{") == n
	})
	m := f.metrics()
	for _, want := range []string{`shoal_frames_total{direction="in"`, `shoal_bytes_total{direction="out"`, "shoal_bus_errors_total{"} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// kill -9 one worker: the other's clients stay, a new worker comes.
	var victim, survivor int
	for pid := range workers {
		if victim == 0 {
			victim = pid
		} else {
			survivor = pid
		}
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a replacement worker", func() bool {
		ws := f.workers()
		_, old := ws[victim]
		return len(ws) == 2 && !old
	})
	for i, c := range clients {
		err := c.echo(ws.OpText, []byte("still here"))
		switch owner[i] {
		case survivor:
			if err != nil {
				t.Fatalf("client %d of the surviving worker: %v", i, err)
			}
		case victim:
			if err == nil {
				t.Fatalf("client %d of the killed worker still echoes", i)
			}
		}
	}
	// New clients are served, by the replacement worker too in time.
	for range 20 {
		if err := dial(t, f.ws+"/ws/echo").echo(ws.OpText, []byte("new")); err != nil {
			t.Fatalf("new client: %v", err)
		}
	}
	if !strings.Contains(f.metrics(), "shoal_child_restarts_total") {
		t.Error("/metrics lacks shoal_child_restarts_total")
	}

	// SIGTERM: every client hears 1001, then everything exits 0.
	var live []*client
	for i, c := range clients {
		if owner[i] == survivor {
			live = append(live, c)
		}
	}
	pids := []int{f.cmd.Process.Pid}
	for _, p := range f.procs() {
		pids = append(pids, p.PID)
	}
	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i, c := range live {
		c.c.SetDeadline(time.Now().Add(15 * time.Second))
		_, _, err := wsutil.ReadServerData(c.rw)
		var ce wsutil.ClosedError
		if !errors.As(err, &ce) || ce.Code != ws.StatusGoingAway {
			t.Fatalf("client %d on SIGTERM: %v, want close 1001", i, err)
		}
	}
	f.waitExit()
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(b), ") Z ") {
				t.Errorf("process %d still running after shutdown", pid)
			}
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitLong(t, what, 30*time.Second, cond)
}
