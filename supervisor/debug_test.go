package supervisor

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Every profile request the admin endpoint forwards to a child's debug
// socket leaves nothing open behind it: not a connection in the child (an
// fd and a goroutine there), nor one in the supervisor (an fd and two
// goroutines). The admin endpoint is polled by tools and by the soak
// test for the whole life of a gateway.
func TestProxyDebugLeavesNoConnection(t *testing.T) {
	dir, err := os.MkdirTemp("", "shoal-debug-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "worker-0-1.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// The child's side, counting its open connections.
	var mu sync.Mutex
	open := 0
	child := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) }),
		ConnState: func(_ net.Conn, st http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch st {
			case http.StateNew:
				open++
			case http.StateClosed, http.StateHijacked:
				open--
			}
		},
	}
	go child.Serve(ln)
	t.Cleanup(func() { child.Close() })

	s, err := New(Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sl := s.newSlot(roleWorker, 0, 0, "")
	sl.cur = &proc{cmd: &exec.Cmd{Process: &os.Process{Pid: 1}}, debug: sock, exited: make(chan struct{})}
	s.workers = append(s.workers, sl)
	mux := http.NewServeMux()
	s.debugRoutes(mux)
	admin := httptest.NewServer(mux)
	t.Cleanup(admin.Close)

	const requests = 20
	for range requests {
		resp, err := http.Get(admin.URL + "/debug/pprof/worker/0/heap")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "/debug/pprof/heap" {
			t.Fatalf("proxied request: %d %q", resp.StatusCode, b)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := open
		mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d proxied requests left their connection to the child open", n, requests)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
