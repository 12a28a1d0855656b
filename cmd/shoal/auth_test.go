package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/auth"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/shard"
)

// handshake sends a WebSocket handshake to rawURL with the extra header
// lines and returns the answer's status and body; the connection is closed.
func handshake(t *testing.T, rawURL string, header ...string) (int, string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("handshake to %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

// tokenCase is a token presented at the handshake and what must come of it.
type tokenCase struct {
	name   string
	token  func(k auth.Key) string
	status int    // 101 or 401
	user   string // the user bound, when upgraded
	body   string // in the refusal's body
	reason string // the rejection counted
}

func tokenCases(t *testing.T) []tokenCase {
	sign := func(user string, aud []string, ttl time.Duration, at time.Time) func(auth.Key) string {
		return func(k auth.Key) string {
			tok, _, err := k.Sign(user, aud, ttl, at)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
	}
	now := time.Now()
	other := make(auth.Key, auth.KeySize)
	return []tokenCase{
		{name: "none", token: func(auth.Key) string { return "" }, status: 101},
		{name: "good", token: sign("alice", []string{"echo"}, time.Hour, now), status: 101, user: "alice"},
		{name: "good for several", token: sign("bob", []string{"chat", "echo"}, time.Hour, now), status: 101, user: "bob"},
		{name: "garbage", token: func(auth.Key) string { return "not.a.token" }, status: 401, body: "invalid token", reason: reasonTokenInvalid},
		{name: "other key", token: func(auth.Key) string {
			tok, _, err := other.Sign("mallory", []string{"echo"}, time.Hour, now)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, status: 401, body: "invalid token", reason: reasonTokenInvalid},
		{name: "expired", token: sign("alice", []string{"echo"}, time.Hour, now.Add(-2*time.Hour)), status: 401, body: "expired", reason: reasonTokenExpired},
		{name: "other service", token: sign("alice", []string{"chat"}, time.Hour, now), status: 401, body: "not meant for this service", reason: reasonTokenInvalid},
	}
}

// The worker's authenticator on a real shard and a real bus: a good token
// binds its user to every event of the connection, no token is anonymous,
// a bad one is refused with 401 and counted by reason.
func TestTokenAtHandshake(t *testing.T) {
	srv := bustest.RunServer(t)
	svc := bustest.Connect(t, srv.ClientURL())
	events := make(chan *nats.Msg, 64)
	bustest.Subscribe(t, svc, bus.Subjects{}.Service("echo"), events)
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	key := make(auth.Key, auth.KeySize)
	for i := range key {
		key[i] = byte(i * 7)
	}
	sh, err := shard.New(shard.Config{
		ID: "t1", Addr: "127.0.0.1:0", NATS: bustest.Connect(t, srv.ClientURL()),
		Services:     []string{"echo", "chat"},
		Authenticate: tokenAuthenticator(key),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.Close)
	base := "ws://" + sh.Addr().String() + "/ws/echo"
	next := func(kind string) *nats.Msg {
		t.Helper()
		select {
		case m := <-events:
			if got := m.Header.Get(bus.HeaderEvent); got != kind {
				t.Fatalf("event %s, want %s", got, kind)
			}
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event", kind)
		}
		return nil
	}
	rejected := make(map[string]uint64)
	for _, c := range tokenCases(t) {
		tok := c.token(key)
		target := base + "?room=lobby"
		if tok != "" {
			target += "&token=" + url.QueryEscape(tok)
		}
		if c.status != 101 {
			status, body := handshake(t, target)
			if status != c.status || !strings.Contains(body, c.body) {
				t.Errorf("%s: %d %q, want %d with %q", c.name, status, body, c.status, c.body)
			}
			rejected[c.reason]++
			continue
		}
		// The token in the query, and the same token as a bearer token.
		for _, how := range []string{"query", "bearer"} {
			d := ws.Dialer{Timeout: 10 * time.Second}
			u := target
			if how == "bearer" {
				if tok == "" {
					continue
				}
				u = base
				d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})
			}
			conn, _, _, err := d.Dial(context.Background(), u)
			if err != nil {
				t.Fatalf("%s (%s): %v", c.name, how, err)
			}
			open := next(bus.EventOpen)
			// The token was checked here: services get the rest of the
			// query, not the credential.
			if got, want := open.Header.Get(bus.HeaderPath), map[string]string{"query": "/ws/echo?room=lobby", "bearer": "/ws/echo"}[how]; got != want {
				t.Errorf("%s (%s): Shoal-Path %q, want %q", c.name, how, got, want)
			}
			if err := wsutil.WriteClientText(conn, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			msg := next(bus.EventMessage)
			conn.Close()
			closed := next(bus.EventClose)
			for _, m := range []*nats.Msg{open, msg, closed} {
				got, bound := m.Header[bus.HeaderUser]
				if c.user == "" && bound || c.user != "" && (len(got) != 1 || got[0] != c.user) {
					t.Errorf("%s (%s): %s event carries Shoal-User %q, want %q", c.name, how, m.Header.Get(bus.HeaderEvent), got, c.user)
				}
			}
		}
	}
	// A refusal is counted once its answer is written: wait for the counts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := sh.Stats().Rejected
		if fmt.Sprint(got) == fmt.Sprint(rejected) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections counted %v, want %v", got, rejected)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
