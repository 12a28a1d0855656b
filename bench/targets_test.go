package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeFileT(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func TestFindPeersDir(t *testing.T) {
	root := t.TempDir()
	writeFileT(t, filepath.Join(root, "bench", "peers", "go.mod"), "module example.com/x/bench/peers\n\ngo 1.26\n", 0o644)
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, "bench", "peers")
	for _, from := range []string{root, deep, want, filepath.Join(want, "gorilla")} {
		got, err := FindPeersDir(from)
		if err != nil || got != want {
			t.Errorf("from %s: %q, %v; want %q", from, got, err, want)
		}
	}
	// A go.mod of another module is not the peers.
	other := t.TempDir()
	writeFileT(t, filepath.Join(other, "bench", "peers", "go.mod"), "module example.com/other\n", 0o644)
	if _, err := FindPeersDir(other); !errors.Is(err, ErrPeers) || !strings.Contains(err.Error(), "--peers-dir") {
		t.Errorf("other module: %v", err)
	}
	// This source tree has them.
	if got, err := FindPeersDir("."); err != nil || !isPeersModule(got) {
		t.Errorf("source tree: %q, %v", got, err)
	}
	if _, err := BuildPeers(context.Background(), other, t.TempDir(), []string{"gorilla"}); !errors.Is(err, ErrPeers) {
		t.Errorf("BuildPeers in a wrong directory: %v", err)
	}
}

// fakePeer writes a shell script that behaves like a peer: it announces
// its address, runs a child in its process group, and exits 0 on SIGTERM.
func fakePeer(t testing.TB, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "peer")
	writeFileT(t, path, "#!/bin/sh\n"+script, 0o755)
	return path
}

func TestTargetStartStop(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	bin := fakePeer(t, `trap 'exit 0' TERM
sleep 300 &
echo $! > `+pidFile+`
echo "listening 127.0.0.1:4242"
while :; do sleep 0.05; done
`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tg, err := StartPeer(ctx, "fake", bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Stop() })
	if tg.URL != "ws://127.0.0.1:4242" || tg.PID <= 0 || tg.Admin != "" {
		t.Fatalf("target %+v", tg)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for _, c := range strings.TrimSpace(string(b)) {
		child = child*10 + int(c-'0')
	}
	if err := tg.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := tg.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	// What the target left in its process group is gone too.
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(child, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the target outlived it", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTargetExitsBeforeServing(t *testing.T) {
	bin := fakePeer(t, "echo 'address already in use' >&2\nexit 3\n")
	_, err := StartPeer(context.Background(), "fake", bin)
	if !errors.Is(err, ErrTarget) || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err %v", err)
	}
	if _, err := StartShoal(context.Background(), bin, 0); !errors.Is(err, ErrUsage) {
		t.Errorf("0 workers: %v", err)
	}
}
