package client

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

// A list of URLs spreads connections over its targets by index, and
// DialTarget picks one, each with its own Host and path.
func TestDialTargets(t *testing.T) {
	gotA, gotB := make(chan *http.Request, 4), make(chan *http.Request, 4)
	ok := func(key string) []byte { return switching(acceptOf(key)) }
	a := startServer(t, rawServe(gotA, ok, nil))
	b := startServer(t, rawServe(gotB, ok, nil))
	e := newEngine(t, Config{URL: a.url("/ws/a") + ", " + b.url("/ws/b") + ","})
	if e.Targets() != 2 {
		t.Fatalf("%d targets, want 2", e.Targets())
	}
	r := newRecorder(4)
	for idx, want := range map[int]chan *http.Request{0: gotA, 1: gotB, 2: gotA} {
		c := dial(t, e, r, idx)
		req := recv(t, want, "request")
		if c.Target() != idx%2 || req.RequestURI != []string{"/ws/a", "/ws/b"}[idx%2] {
			t.Errorf("connection %d: target %d, request %s", idx, c.Target(), req.RequestURI)
		}
		recv(t, r.opens, "Open")
	}
	c, err := e.DialTarget(r, 7, 3)
	if err != nil {
		t.Fatal(err)
	}
	if req := recv(t, gotB, "request"); c.Target() != 1 || c.Index() != 7 || req.Host != b.ln.Addr().String() {
		t.Errorf("DialTarget(7, 3): target %d index %d Host %s", c.Target(), c.Index(), req.Host)
	}
	if _, err := New(Config{URL: a.url("/") + ",http://x/"}); !errors.Is(err, ErrBadURL) {
		t.Errorf("a bad URL in the list: %v, want ErrBadURL", err)
	}
	if _, err := New(Config{URL: " , "}); !errors.Is(err, ErrBadURL) {
		t.Errorf("an empty list: %v, want ErrBadURL", err)
	}
}

func TestReconnectDelay(t *testing.T) {
	for _, c := range []struct {
		reason string
		want   time.Duration
		ok     bool
	}{
		{"server restarting, reconnect in 1234ms", 1234 * time.Millisecond, true},
		{"server shutting down, reconnect in 0ms", 0, true},
		{"reconnect in 2.5s please", 2500 * time.Millisecond, true},
		{"reconnect in 99999s", maxReconnectDelay, true},
		{"server shutting down", 0, false},
		{"reconnect in soon", 0, false},
		{"reconnect in 12 parsecs", 0, false},
		{"", 0, false},
	} {
		d, ok := (&CloseError{Code: 1012, Reason: c.reason}).ReconnectDelay()
		if d != c.want || ok != c.ok {
			t.Errorf("%q: %v %v, want %v %v", c.reason, d, ok, c.want, c.ok)
		}
	}
}
