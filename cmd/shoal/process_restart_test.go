package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-gw/shoal/bench"
)

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitLong polls cond for up to limit: a rolling restart on a loaded
// machine takes its time.
func waitLong(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRollingRestartRefusesNothing: SIGHUP replaces the workers one at a
// time while shoal bench connect --reconnect dials and holds connections.
// Not one connection fails: the port always has a listening worker, and
// the clients of a drained worker, told 1012 (service restart), reconnect
// after the delay their close reason names. Then the binary on disk is replaced, as an upgrade does,
// and the next SIGHUP starts every worker from the new file.
func TestRollingRestartRefusesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	built, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "shoal")
	copyFile(t, built, exe, 0o755)
	f := startServeExe(t, exe, "--workers", "2", "--services", "echo", "--drain-window", "500ms", "--drain-timeout", "5s")

	const n = 300
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep *bench.Report
		err error
	}
	done := make(chan result, 1)
	var out bytes.Buffer
	go func() {
		rep, err := bench.Main(ctx, bench.Config{Args: []string{"connect", "--url", f.ws + "/ws/echo",
			"--conns", fmt.Sprint(n), "--rate", "60", "--hold", "10m", "--reconnect"}, Stdout: &out, Stderr: &out})
		done <- result{rep, err}
	}()
	stopBench := func() result {
		cancel()
		select {
		case r := <-done:
			return r
		case <-time.After(time.Minute):
			t.Fatal("bench did not stop within a minute")
		}
		return result{}
	}
	restart := func(k int) {
		t.Helper()
		if err := f.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitLong(t, fmt.Sprintf("rolling restart %d", k), 2*time.Minute, func() bool { return f.logCount("rolling restart done") == k })
	}

	// The first restart runs while the bench is still dialing.
	waitLong(t, "the ramp under way", time.Minute, func() bool { return f.metricSum("shoal_connections{") >= n/5 })
	restart(1)

	// An upgrade: a new binary replaces the file, and SIGHUP runs it.
	next := filepath.Join(dir, "shoal.next")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v0.0.0-next", "-o", next, ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the next version: %v\n%s", err, b)
	}
	if err := os.Rename(next, exe); err != nil {
		t.Fatal(err)
	}
	if v, err := exec.Command(exe, "version").Output(); err != nil || !strings.Contains(string(v), "v0.0.0-next") {
		t.Fatalf("the new binary says %q (%v)", v, err)
	}
	newFile, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	waitLong(t, "every connection held", 2*time.Minute, func() bool { return f.metricSum("shoal_connections{") == n })
	sockets := f.listeningSockets(t)
	restart(2)
	// The new workers took over the old ones' listening sockets (serve
	// hands each slot's socket down), rather than opening new ones.
	if after := f.listeningSockets(t); !slices.Equal(after, sockets) || len(after) != 2 {
		t.Errorf("the workers listen on sockets %v after the restart, %v before: want the same two", after, sockets)
	}
	workers := f.workers()
	if len(workers) != 2 {
		t.Fatalf("%d workers after the upgrade, want 2", len(workers))
	}
	for pid := range workers {
		running, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || !os.SameFile(running, newFile) {
			t.Errorf("worker %d does not run the new binary (%v)", pid, err)
		}
	}

	// The held connections of the drained workers are back.
	waitLong(t, "every connection held again", 2*time.Minute, func() bool { return f.metricSum("shoal_connections{") == n })
	res := stopBench()
	if res.rep == nil {
		t.Fatalf("bench: %v\n%s", res.err, out.String())
	}
	c := res.rep.Conns
	closes := int64(0)
	for _, k := range c.ServerCloses {
		closes += k
	}
	if c.Established != n || c.Failed != 0 || len(c.Failures) != 0 {
		t.Fatalf("%d of %d established, %d failed %v; want every one and no failure\n%s", c.Established, n, c.Failed, c.Failures, out.String())
	}
	if closes == 0 || c.ServerCloses["1012"] != closes || c.Reconnects != closes {
		t.Fatalf("%d closes by the server %v, %d reconnects: want every drained client told 1012 (service restart) and back\n%s", closes, c.ServerCloses, c.Reconnects, out.String())
	}
	t.Logf("through two rolling restarts: %d established, closes %v, %d reconnects, none failed", c.Established, c.ServerCloses, c.Reconnects)
}

// listeningSockets lists the inodes of the sockets the workers listen on
// at the gateway's port, sorted.
func (f *fleet) listeningSockets(t *testing.T) []string {
	t.Helper()
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(f.ws, "ws://"))
	port, _ := strconv.Atoi(portStr)
	held := map[string]bool{}
	for pid := range f.workers() {
		for inode := range socketInodes(pid) {
			held[inode] = true
		}
	}
	var out []string
	for _, s := range tcpSockets(t) {
		if s.listen && s.local == port && held[s.inode] {
			out = append(out, s.inode)
		}
	}
	slices.Sort(out)
	return out
}
