package acceptor

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestHeadEnd(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want int
	}{
		{
			name: "empty",
			in:   "",
			want: -1,
		},
		{
			name: "crlf",
			in:   "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			want: len("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		},
		{
			name: "crlf with body after",
			in:   "GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY",
			want: len("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		},
		{
			name: "bare lf",
			in:   "GET / HTTP/1.1\nHost: x\n\nrest",
			want: len("GET / HTTP/1.1\nHost: x\n\n"),
		},
		{
			name: "incomplete final crlf",
			in:   "GET / HTTP/1.1\r\nHost: x\r\n\r",
			want: -1,
		},
		{
			name: "no blank line",
			in:   "GET / HTTP/1.1\r\nHost: x\r\n",
			want: -1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := headEnd([]byte(tc.in)); got != tc.want {
				t.Fatalf(
					"headEnd(%q) = %d, want %d",
					tc.in, got, tc.want)
			}
		})
	}
}

func TestParseRequestLine(t *testing.T) {
	rl, ok := parseRequestLine([]byte("GET /ws/echo?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"))
	if !ok || rl.method != "GET" || rl.target != "/ws/echo?x=1" {
		t.Fatalf("got %+v %v", rl, ok)
	}
	for _, bad := range []string{"", "GET\r\n", "GET /\r\n", "GET / FTP/1.0\r\n", " / HTTP/1.1\r\n"} {
		if _, ok := parseRequestLine([]byte(bad)); ok {
			t.Errorf("parseRequestLine(%q) accepted", bad)
		}
	}
}

func TestWantsWebSocket(t *testing.T) {
	yes := []string{
		"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nupgrade: WebSocket\r\n\r\n",
		"GET / HTTP/1.1\r\nUPGRADE: h2c, websocket\r\n\r\n",
	}
	no := []string{
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
		"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n",
	}
	for _, s := range yes {
		if !wantsWebSocket([]byte(s)) {
			t.Errorf("wantsWebSocket(%q) = false", s)
		}
	}
	for _, s := range no {
		if wantsWebSocket([]byte(s)) {
			t.Errorf("wantsWebSocket(%q) = true", s)
		}
	}
}

func TestServicePath(t *testing.T) {
	cases := map[string]struct {
		svc string
		ok  bool
	}{
		"/ws/echo":           {"echo", true},
		"/ws/echo?token=abc": {"echo", true},
		"/ws/":               {"", true},
		"/ws/a/b":            {"a/b", true},
		"/healthz":           {"", false},
		"/wsx/echo":          {"", false},
	}
	for in, want := range cases {
		svc, ok := servicePath(in)
		if svc != want.svc || ok != want.ok {
			t.Errorf("servicePath(%q) = %q, %v; want %q, %v", in, svc, ok, want.svc, want.ok)
		}
	}
}

func TestStatusResponse(t *testing.T) {
	resp := statusResponse(http.StatusNotFound, "no service")
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 404 Not Found\r\n")) {
		t.Fatalf("status line: %q", resp)
	}
	if !strings.HasSuffix(string(resp), "\r\n\r\nno service\n") {
		t.Fatalf("body: %q", resp)
	}
}
