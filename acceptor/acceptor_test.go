package acceptor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/netpoll"
)

// harness runs an Acceptor on a real listener with a real poller, pool
// and wheel, and collects the connections it upgrades.
type harness struct {
	t        testing.TB
	a        *Acceptor
	addr     string
	upgraded chan Upgraded

	mu       sync.Mutex
	rejected map[string]int
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	poller, err := netpoll.NewPoller(nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := netpoll.NewPool(0, 0)
	wheel := netpoll.NewWheel(10*time.Millisecond, 0)
	wheel.Start()
	h := &harness{t: t, upgraded: make(chan Upgraded, 64), rejected: make(map[string]int)}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "ok %s %d", r.Method, len(body))
	})
	cfg := Config{
		Poller:   poller,
		Pool:     pool,
		Wheel:    wheel,
		Services: func(name string) bool { return name == "echo" },
		HTTP:     mux,
		Upgraded: func(u *Upgraded) {
			cp := *u
			cp.Rest = append([]byte(nil), u.Rest...)
			h.upgraded <- cp
		},
		Rejected: func(reason string) {
			h.mu.Lock()
			h.rejected[reason]++
			h.mu.Unlock()
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(ln, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	h.a = a
	h.addr = ln.Addr().String()
	t.Cleanup(func() {
		a.Close()
		close(h.upgraded)
		for u := range h.upgraded {
			unix.Close(u.Fd)
			a.Release(u.Remote)
		}
		pool.Close()
		wheel.Stop()
		poller.Close()
	})
	return h
}

func (h *harness) rejections(reason string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rejected[reason]
}

func (h *harness) dial() net.Conn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends raw request bytes and reads one response.
func (h *harness) roundTrip(raw string) *http.Response {
	h.t.Helper()
	c := h.dial()
	if _, err := io.WriteString(c, raw); err != nil {
		h.t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		h.t.Fatalf("reading response to %q: %v", raw, err)
	}
	return resp
}

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

func wsRequest(target string, extra ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

func TestHandshakeStatuses(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.AllowedOrigins = []string{"https://chat.example.com"}
	})
	cases := []struct {
		name    string
		req     string
		status  int
		reason  string
		upgrade bool
	}{
		{
			name:    "upgrade",
			req:     wsRequest("/ws/echo?room=a"),
			status:  http.StatusSwitchingProtocols,
			upgrade: true,
		},
		{
			name:   "unknown service",
			req:    wsRequest("/ws/nope"),
			status: http.StatusNotFound,
			reason: "unknown_service",
		},
		{
			name:   "nested service path",
			req:    wsRequest("/ws/echo/x"),
			status: http.StatusNotFound,
			reason: "unknown_service",
		},
		{
			name:   "plain GET on a WebSocket path",
			req:    "GET /ws/echo HTTP/1.1\r\nHost: x\r\n\r\n",
			status: http.StatusUpgradeRequired,
			reason: "not_websocket",
		},
		{
			name:   "missing key",
			req:    "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
			status: http.StatusBadRequest,
			reason: "handshake",
		},
		{
			name:   "wrong version",
			req:    "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 8\r\n\r\n",
			status: http.StatusUpgradeRequired,
			reason: "handshake",
		},
		{
			name:   "POST upgrade",
			req:    strings.Replace(wsRequest("/ws/echo"), "GET", "POST", 1),
			status: http.StatusMethodNotAllowed,
			reason: "handshake",
		},
		{
			name:   "foreign origin",
			req:    wsRequest("/ws/echo", "Origin: https://evil.example.com\r\n"),
			status: http.StatusForbidden,
			reason: "origin",
		},
		{
			name:    "allowed origin",
			req:     wsRequest("/ws/echo", "Origin: https://chat.example.com\r\n"),
			status:  http.StatusSwitchingProtocols,
			upgrade: true,
		},
		{
			name:    "same-host origin",
			req:     wsRequest("/ws/echo", "Origin: http://127.0.0.1\r\n"),
			status:  http.StatusSwitchingProtocols,
			upgrade: true,
		},
		{
			name:   "malformed request line",
			req:    "HELLO\r\n\r\n",
			status: http.StatusBadRequest,
			reason: "bad_request",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.rejections(tc.reason)
			resp := h.roundTrip(tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.upgrade {
				if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
					t.Fatalf("Sec-WebSocket-Accept = %q", got)
				}
				select {
				case u := <-h.upgraded:
					if u.Service != "echo" {
						t.Fatalf("upgraded service %q", u.Service)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no upgraded connection")
				}
				return
			}
			// The count is taken after the response is written.
			deadline := time.Now().Add(10 * time.Second)
			for h.rejections(tc.reason) != before+1 {
				if time.Now().After(deadline) {
					t.Fatalf("rejections[%q] went from %d to %d", tc.reason, before, h.rejections(tc.reason))
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func TestUpgradeKeepsPipelinedBytes(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	frame := []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	if _, err := c.Write(append([]byte(wsRequest("/ws/echo?x=1")), frame...)); err != nil {
		t.Fatal(err)
	}
	u := <-h.upgraded
	if string(u.Rest) != string(frame) {
		t.Fatalf("Rest = %x, want %x", u.Rest, frame)
	}
	if u.URI != "/ws/echo?x=1" || !u.Remote.IsValid() {
		t.Fatalf("upgraded %+v", u)
	}
}

func TestHeadSplitAcrossWrites(t *testing.T) {
	h := newHarness(t, nil)
	c := h.dial()
	req := wsRequest("/ws/echo")
	for i := 0; i < len(req); i += 7 {
		if _, err := io.WriteString(c, req[i:min(i+7, len(req))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case u := <-h.upgraded:
		if u.Service != "echo" {
			t.Fatalf("service %q", u.Service)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("split head was not upgraded")
	}
}

// A request that arrives well after the connection, when the first read
// found nothing and the connection waits in the poller, and one that is
// there at once, are both upgraded.
func TestRequestBeforeAndAfterAccept(t *testing.T) {
	h := newHarness(t, nil)
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		c := h.dial()
		time.Sleep(delay)
		if _, err := io.WriteString(c, wsRequest("/ws/echo")); err != nil {
			t.Fatal(err)
		}
		select {
		case u := <-h.upgraded:
			if u.Service != "echo" {
				t.Fatalf("delay %s: service %q", delay, u.Service)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("delay %s: not upgraded", delay)
		}
	}
}

func TestPlainHTTPOnSamePort(t *testing.T) {
	h := newHarness(t, nil)
	resp := h.roundTrip("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
	if resp.StatusCode != 200 || string(body) != "ok POST 5" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	resp = h.roundTrip("GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path: %d", resp.StatusCode)
	}
}

func TestAuthenticate(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Authenticate = func(r *Request) (string, error) {
			switch r.Token() {
			case "good":
				return "alice", nil
			case "banned":
				return "", &RejectError{Status: http.StatusForbidden, Reason: "banned"}
			case "old":
				return "", &RejectError{Status: http.StatusUnauthorized, Reason: "token_expired", Err: errors.New("token expired")}
			}
			return "", errors.New("bad token")
		}
	})
	if resp := h.roundTrip(wsRequest("/ws/echo?token=bad")); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}
	if resp := h.roundTrip(wsRequest("/ws/echo?token=banned")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("banned: %d", resp.StatusCode)
	}
	// The client reads the rejection's own text, not the acceptor's wrapping.
	resp := h.roundTrip(wsRequest("/ws/echo?token=old"))
	if body, _ := io.ReadAll(io.LimitReader(resp.Body, 200)); resp.StatusCode != http.StatusUnauthorized || string(body) != "token expired" {
		t.Fatalf("expired token: %d %q", resp.StatusCode, body)
	}
	if resp := h.roundTrip(wsRequest("/ws/echo", "Authorization: Bearer good\r\n")); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("good token: %d", resp.StatusCode)
	}
	if u := <-h.upgraded; u.User != "alice" {
		t.Fatalf("user %q", u.User)
	}
	// A refusal is counted after its answer is written: wait for the count.
	waitFor(t, func() bool {
		return h.rejections("auth") == 1 && h.rejections("banned") == 1 && h.rejections("token_expired") == 1
	})
}

func TestHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HandshakeTimeout = 100 * time.Millisecond })
	c := h.dial()
	io.WriteString(c, "GET /ws/echo HTTP/1.1\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitFor(t, func() bool { return h.rejections("timeout") == 1 })
	if h.a.Pending() != 0 {
		t.Fatalf("pending %d", h.a.Pending())
	}
}

func TestHeadTooLarge(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxHeaderBytes = 512 })
	resp := h.roundTrip(wsRequest("/ws/echo", "X-Big: "+strings.Repeat("a", 600)+"\r\n"))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestPerAddressLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConnsPerIP = 2 })
	h.dial()
	h.dial()
	waitFor(t, func() bool { return h.a.Pending() == 2 })
	resp := h.roundTrip(wsRequest("/ws/echo"))
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestStopAcceptingRefusesNewConnections(t *testing.T) {
	h := newHarness(t, nil)
	h.a.StopAccepting()
	h.a.StopAccepting()
	if c, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("dial succeeded after StopAccepting")
	}
}

func TestListenSharesPort(t *testing.T) {
	a, err := Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen(a.Addr().String(), 0)
	if err != nil {
		t.Fatalf("second SO_REUSEPORT listener on %s: %v", a.Addr(), err)
	}
	defer b.Close()
	if _, err := Listen("127.0.0.1:bad", 0); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("bad port: %v", err)
	}
	if _, err := Listen("example.com:80", 0); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("host name: %v", err)
	}
}

// waitFor polls cond until it holds or ten seconds pass.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Origins are allowed per service: a service with a list of its own uses
// it instead of the global one; the gateway's own host is always allowed.
func TestServiceOrigins(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Services = func(name string) bool { return name == "echo" || name == "chat" || name == "open" }
		c.AllowedOrigins = []string{"https://app.example.com"}
		c.ServiceOrigins = map[string][]string{
			"chat": {"https://chat.example.com", "https://chat.example.org:8443"},
			"open": {"*"},
		}
	})
	for _, c := range []struct {
		service, origin string
		ok              bool
	}{
		{"echo", "https://app.example.com", true},
		{"echo", "https://chat.example.com", false},
		{"chat", "https://chat.example.com", true},
		{"chat", "HTTPS://CHAT.EXAMPLE.ORG:8443", true},
		{"chat", "https://chat.example.org", false},
		{"chat", "https://app.example.com", false},
		{"chat", "http://127.0.0.1", true},
		{"chat", "", true},
		{"open", "https://anywhere.example.net", true},
	} {
		var extra []string
		if c.origin != "" {
			extra = append(extra, "Origin: "+c.origin+"\r\n")
		}
		before := h.rejections("origin")
		resp := h.roundTrip(wsRequest("/ws/"+c.service, extra...))
		switch {
		case c.ok && resp.StatusCode != http.StatusSwitchingProtocols:
			t.Errorf("%s from %q: %s, want 101", c.service, c.origin, resp.Status)
		case c.ok:
			<-h.upgraded
		case resp.StatusCode != http.StatusForbidden:
			t.Errorf("%s from %q: %s, want 403", c.service, c.origin, resp.Status)
		default:
			waitFor(t, func() bool { return h.rejections("origin") == before+1 })
		}
	}
}
