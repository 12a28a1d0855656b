package acceptor

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// upgradeOne runs a handshake that must succeed and returns what the
// acceptor handed over; the caller releases it.
func (h *harness) upgradeOne() Upgraded {
	h.t.Helper()
	if resp := h.roundTrip(wsRequest("/ws/echo")); resp.StatusCode != http.StatusSwitchingProtocols {
		h.t.Fatalf("handshake: %d, want 101", resp.StatusCode)
	}
	select {
	case u := <-h.upgraded:
		return u
	case <-time.After(10 * time.Second):
		h.t.Fatal("no upgraded connection")
	}
	panic("unreachable")
}

func (h *harness) release(u Upgraded) {
	unix.Close(u.Fd)
	h.a.Release(u.Remote)
}

// A full worker answers a handshake 503 with Retry-After, counts it as
// max_conns, and takes connections again as soon as one is released;
// plain HTTP on the port is not turned away.
func TestMaxConns(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConns = 2 })
	a, b := h.upgradeOne(), h.upgradeOne()
	if h.a.Held() != 2 {
		t.Fatalf("held %d, want 2", h.a.Held())
	}
	resp := h.roundTrip(wsRequest("/ws/echo"))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" {
		t.Fatalf("third handshake: %d, Retry-After %q (%q); want 503 with Retry-After 5", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	waitFor(t, func() bool { return h.rejections("max_conns") == 1 })
	if resp := h.roundTrip("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz of a full worker: %d", resp.StatusCode)
	}
	// A refused handshake gave its place back: still two held.
	if h.a.Held() != 2 {
		t.Fatalf("held %d after a refusal, want 2", h.a.Held())
	}
	h.release(a)
	c := h.upgradeOne()
	h.release(b)
	h.release(c)
	if h.a.Held() != 0 {
		t.Fatalf("held %d after releasing all, want 0", h.a.Held())
	}
	// A handshake that fails after its place was taken gives it back.
	h2 := newHarness(t, func(c *Config) { c.MaxConns = 1 })
	for range 3 {
		if resp := h2.roundTrip(wsRequest("/ws/nope")); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("unknown service: %d", resp.StatusCode)
		}
		// The upgrader writes its refusal before the place is given
		// back, so the client can read the answer a moment earlier.
		waitFor(t, func() bool { return h2.a.Held() == 0 })
	}
	h2.release(h2.upgradeOne())
}

// New upgrades past the handshake rate are answered 503 with a
// Retry-After, and counted as handshake_rate. Whatever the machine's
// speed, no more upgrades pass than the burst plus the rate's refill over
// the time the test took.
func TestHandshakeRate(t *testing.T) {
	const rate = 2
	h := newHarness(t, func(c *Config) { c.MaxHandshakeRate = rate })
	start := time.Now()
	upgraded, refused := 0, 0
	for range 20 {
		resp := h.roundTrip(wsRequest("/ws/echo"))
		switch resp.StatusCode {
		case http.StatusSwitchingProtocols:
			upgraded++
			h.release(<-h.upgraded)
		case http.StatusServiceUnavailable:
			refused++
			if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n != 1 {
				t.Fatalf("Retry-After %q, want 1 (a token comes back every half second)", resp.Header.Get("Retry-After"))
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	elapsed := time.Since(start)
	if most := rate + int(float64(rate)*elapsed.Seconds()+1); upgraded > most {
		t.Fatalf("%d upgrades in %v at %d/s, want at most %d", upgraded, elapsed, rate, most)
	}
	if refused == 0 || upgraded == 0 {
		t.Fatalf("%d upgraded and %d refused: want both", upgraded, refused)
	}
	waitFor(t, func() bool { return h.rejections("handshake_rate") == refused })
	if h.a.Held() != 0 {
		t.Fatalf("held %d, want 0", h.a.Held())
	}
}

// Once the handshake checked a token, the token is no credential of the
// services': it leaves the URI that travels on, the rest of the query
// stays as sent. Without a check, the URI is the client's.
func TestTokenLeavesURI(t *testing.T) {
	target := "/ws/echo?room=a%20b&token=secret&x=1"
	h := newHarness(t, func(c *Config) {
		c.Authenticate = func(r *Request) (string, error) { return "u-" + r.Token(), nil }
	})
	resp := h.roundTrip(wsRequest(target))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	u := <-h.upgraded
	if u.URI != "/ws/echo?room=a%20b&x=1" || u.User != "u-secret" {
		t.Fatalf("URI %q, user %q", u.URI, u.User)
	}
	h.release(u)
	plain := newHarness(t, nil)
	plain.roundTrip(wsRequest(target))
	u = <-plain.upgraded
	if u.URI != target {
		t.Fatalf("URI without Authenticate %q, want %q", u.URI, target)
	}
	plain.release(u)
}

func TestWithoutToken(t *testing.T) {
	for in, want := range map[string]string{
		"/ws/chat":                          "/ws/chat",
		"/ws/chat?":                         "/ws/chat?",
		"/ws/chat?token=abc":                "/ws/chat",
		"/ws/chat?room=lobby&token=abc":     "/ws/chat?room=lobby",
		"/ws/chat?token=a&room=l&token=b":   "/ws/chat?room=l",
		"/ws/chat?%74oken=abc&a=1":          "/ws/chat?a=1",
		"/ws/chat?token":                    "/ws/chat",
		"/ws/chat?tokens=1&mytoken=2":       "/ws/chat?tokens=1&mytoken=2",
		"/ws/chat?a=%zz&token=x":            "/ws/chat?a=%zz",
		"/ws/chat?a=1;token=x":              "/ws/chat?a=1;token=x",
		"/ws/chat?room=%E2%9C%93&token=%3D": "/ws/chat?room=%E2%9C%93",
	} {
		if got := withoutToken(in); got != want {
			t.Errorf("withoutToken(%q) = %q, want %q", in, got, want)
		}
	}
}
