package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// natsServerBinary builds the nats-server of the version go.mod requires
// and keeps it in the user's cache directory under that version
// (~/.cache/shoal/nats-server-v2.x.y), so that a machine builds each
// version once.
var natsServerBinary = sync.OnceValues(func() (string, error) {
	const module = "github.com/nats-io/nats-server/v2"
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", module).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	version := strings.TrimSpace(string(out))
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	exe := filepath.Join(cache, "shoal", "nats-server-"+version)
	if fi, err := os.Stat(exe); err == nil && fi.Mode()&0o111 != 0 {
		return exe, nil
	}
	if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
		return "", err
	}
	// Built beside and renamed, so that a build cut short or two at once
	// never leave a half-written binary under the final name.
	tmp := exe + ".tmp" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("go", "build", "-o", tmp, module).CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build %s: %v\n%s", module, err, out)
	}
	return exe, os.Rename(tmp, exe)
})

// natsProcess is a nats-server running as a process of its own, with
// JetStream on a store directory, that a test can kill and start again on
// the same port and store.
type natsProcess struct {
	t     *testing.T
	exe   string
	store string
	port  int // 0 until the first start picked one
	cmd   *exec.Cmd
	exit  chan error
}

// startNATSProcess builds (once) and starts a nats-server on a free
// loopback port; the test's cleanup kills it.
func startNATSProcess(t *testing.T) *natsProcess {
	t.Helper()
	exe, err := natsServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	n := &natsProcess{t: t, exe: exe, store: t.TempDir()}
	t.Cleanup(func() {
		if n.cmd != nil {
			n.kill()
		}
	})
	n.start()
	return n
}

// URL is the server's client URL.
func (n *natsProcess) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// listening is nats-server's log line naming its client port.
var listening = regexp.MustCompile(`Listening for client connections on 127\.0\.0\.1:(\d+)`)

// start runs the server and returns once it says it is ready, JetStream
// included (nats-server logs "Server is ready" after enabling it). The
// first start lets the server pick its port (-1), so no other process can
// take it between a probe and the bind; later starts use that port again.
func (n *natsProcess) start() {
	n.t.Helper()
	port := "-1"
	if n.port != 0 {
		port = strconv.Itoa(n.port)
	}
	cmd := exec.Command(n.exe, "-a", "127.0.0.1", "-p", port, "-js", "-sd", n.store)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.cmd, n.exit = cmd, make(chan error, 1)
	ready := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		got := 0
		for sc.Scan() {
			line := sc.Text()
			if m := listening.FindStringSubmatch(line); m != nil {
				got, _ = strconv.Atoi(m[1])
			}
			if strings.Contains(line, "Server is ready") {
				ready <- got
			}
		}
		n.exit <- cmd.Wait()
	}()
	select {
	case p := <-ready:
		if n.port != 0 && p != n.port {
			n.t.Fatalf("nats-server listens on %d, want %d", p, n.port)
		}
		n.port = p
	case err := <-n.exit:
		n.cmd = nil
		n.t.Fatalf("nats-server exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		n.t.Fatal("nats-server not ready within 30s")
	}
}

// kill ends the server with SIGKILL, as a crash would: nothing is
// flushed or closed in order, and its clients see their connections
// drop.
func (n *natsProcess) kill() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Fatal(err)
	}
	select {
	case <-n.exit:
	case <-time.After(10 * time.Second):
		n.t.Fatal("nats-server still running 10s after SIGKILL")
	}
	n.cmd = nil
}
