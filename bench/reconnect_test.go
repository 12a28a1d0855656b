package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/shard"
)

// connect --reconnect against two gateways: when one drains, each of its
// clients waits the delay its close reason names and reconnects to the
// other, and none fails.
func TestConnectReconnectsToTheNextURL(t *testing.T) {
	srv := bustest.RunServer(t)
	shards := make([]*shard.Shard, 2)
	for i := range shards {
		s, err := shard.New(shard.Config{
			ID:            []string{"ra", "rb"}[i],
			Addr:          "127.0.0.1:0",
			NATS:          bustest.Connect(t, srv.ClientURL()),
			Services:      []string{"echo"},
			MaxConnsPerIP: -1,
			DrainWindow:   300 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		shards[i] = s
	}
	const n = 40
	urls := "ws://" + shards[0].Addr().String() + "/ws/echo,ws://" + shards[1].Addr().String() + "/ws/echo"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	out := &lockedBuffer{}
	go func() {
		rep, err := Main(ctx, Config{Args: []string{"connect", "--url", urls, "--conns", "40", "--rate", "400",
			"--hold", "2m", "--reconnect"}, Stdout: out, Stderr: out})
		done <- result{rep, err}
	}()
	waitFor(t, "both gateways holding half the clients", func() bool {
		return shards[0].Conns() == n/2 && shards[1].Conns() == n/2
	})
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := shards[0].Shutdown(dctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	waitFor(t, "every client on the second gateway", func() bool { return shards[1].Conns() == n })
	// The gateway counts a connection at its upgrade, the bench at the 101
	// it reads after: wait for a progress line from after this point that
	// shows all of them open on the bench's side too.
	seen := out.Len()
	waitFor(t, "every client reconnected, as the bench sees it", func() bool {
		return strings.Contains(out.String()[seen:], fmt.Sprintf(" conns %d/%d", n, n))
	})
	cancel()
	res := <-done
	if res.rep == nil {
		t.Fatalf("bench: %v\n%s", res.err, out.String())
	}
	c := res.rep.Conns
	if c.Established != n || c.Reconnects != n/2 || c.Failed != 0 || c.ServerCloses["1001"] != n/2 {
		t.Fatalf("conns %+v, want %d established, %d reconnected after 1001, none failed\n%s", c, n, n/2, out.String())
	}
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer the bench writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
