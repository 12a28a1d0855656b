package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/auth"
	"github.com/shoal-gw/shoal/bus"
)

// TestServeTokens runs `shoal serve` with two workers: it makes the key
// file in its data directory, every worker checks handshake tokens with it,
// and the user of a good token is on every event the echo service gets.
func TestServeTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "2", "--services", "echo")
	keyPath := filepath.Join(f.data, "token.key")
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatalf("serve made no key file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 600", st.Mode().Perm())
	}
	key, err := auth.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}

	// Watch the service's subject beside the echo service.
	events := f.watch("echo")
	// eventsOf collects the open and message events of the connection that
	// opened next, which is the only one connecting.
	eventsOf := func() (open, msg *nats.Msg) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for msg == nil {
			select {
			case m := <-events:
				switch m.Header.Get(bus.HeaderEvent) {
				case bus.EventOpen:
					open = m
				case bus.EventMessage:
					if open != nil && m.Header.Get(bus.HeaderConn) == open.Header.Get(bus.HeaderConn) {
						msg = m
					}
				}
			case <-deadline:
				t.Fatal("no open and message events")
			}
		}
		return open, msg
	}

	// Connect until both workers have bound a user: the kernel picks the
	// worker of each connection.
	shards := make(map[string]bool)
	for i := 0; len(shards) < 2; i++ {
		if i == 200 {
			t.Fatalf("200 connections reached only shards %v", shards)
		}
		tok, _, err := key.Sign("alice", []string{"echo"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, f.ws+"/ws/echo?token="+url.QueryEscape(tok))
		if err := c.echo(ws.OpText, []byte("hello")); err != nil {
			t.Fatalf("client %d with a token: %v", i, err)
		}
		open, msg := eventsOf()
		for _, m := range []*nats.Msg{open, msg} {
			if got := m.Header.Get(bus.HeaderUser); got != "alice" {
				t.Fatalf("client %d: %s event carries Shoal-User %q, want alice", i, m.Header.Get(bus.HeaderEvent), got)
			}
		}
		shard, _, err := bus.ParseConnID(open.Header.Get(bus.HeaderConn))
		if err != nil {
			t.Fatal(err)
		}
		shards[shard] = true
		c.c.Close()
	}

	// No token: anonymous, and served.
	c := dial(t, f.ws+"/ws/echo")
	if err := c.echo(ws.OpText, []byte("anyone")); err != nil {
		t.Fatalf("anonymous client: %v", err)
	}
	open, msg := eventsOf()
	if _, ok := open.Header[bus.HeaderUser]; ok {
		t.Errorf("anonymous open event carries Shoal-User %q", open.Header.Get(bus.HeaderUser))
	}
	if _, ok := msg.Header[bus.HeaderUser]; ok {
		t.Errorf("anonymous message event carries Shoal-User %q", msg.Header.Get(bus.HeaderUser))
	}

	// Bad tokens: 401 at the handshake, saying why.
	sign := func(aud []string, at time.Time) string {
		tok, _, err := key.Sign("alice", aud, time.Hour, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign([]string{"echo"}, time.Now())
	for _, c := range []struct {
		name, token, body string
	}{
		{"garbage", "garbage", "invalid token"},
		{"tampered", good[:len(good)-4] + "AAAA", "invalid token"},
		{"expired", sign([]string{"echo"}, time.Now().Add(-2*time.Hour)), "expired"},
		{"for chat only", sign([]string{"chat"}, time.Now()), "not meant for this service"},
	} {
		status, body := handshake(t, f.ws+"/ws/echo?token="+url.QueryEscape(c.token))
		if status != 401 || !strings.Contains(body, c.body) {
			t.Errorf("%s token: %d %q, want 401 saying %q", c.name, status, body, c.body)
		}
	}
	// The bearer form is checked the same way.
	if status, body := handshake(t, f.ws+"/ws/echo", "Authorization: Bearer garbage"); status != 401 || !strings.Contains(body, "invalid token") {
		t.Errorf("bad bearer token: %d %q", status, body)
	}
	waitUntil(t, "the rejections in /metrics", func() bool {
		return f.metricSum(`shoal_handshakes_rejected_total{reason="token_invalid"`) == 4 &&
			f.metricSum(`shoal_handshakes_rejected_total{reason="token_expired"`) == 1
	})

	f.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-f.exit; err != nil {
		t.Fatalf("exit: %v", err)
	}
	// The key outlives the run: the next start of serve finds the same one.
	again, err := auth.LoadKey(keyPath)
	if err != nil || string(again) != string(key) {
		t.Fatalf("key after exit: %v", err)
	}
}
