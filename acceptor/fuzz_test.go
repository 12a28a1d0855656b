package acceptor

import (
	"bytes"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shoal-gw/shoal/netpoll"
)

// FuzzHandshake feeds arbitrary request heads to the routing and to the
// upgrader. Whatever the input, it must not panic, and the client must get
// either a 101 with an accept key or an HTTP error status.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(wsRequest("/ws/echo")))
	f.Add([]byte(wsRequest("/ws/echo?token=x", "Origin: http://127.0.0.1\r\n")))
	f.Add([]byte("GET /ws/echo HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: upgrade\nSec-WebSocket-Key: " + wsKey + "\nSec-WebSocket-Version: 13\n\n"))
	f.Add([]byte("GET /ws/ HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"))
	wheel := netpoll.NewWheel(time.Second, 0)
	a := &Acceptor{cfg: Config{
		Wheel:          wheel,
		MaxHeaderBytes: DefaultMaxHeaderBytes,
		Services:       func(name string) bool { return name == "echo" },
		AllowedOrigins: []string{"https://ok.example"},
	}}
	f.Fuzz(func(t *testing.T, in []byte) {
		end := headEnd(in)
		if end < 0 {
			return
		}
		head := in[:end]
		rl, ok := parseRequestLine(head)
		if !ok {
			return
		}
		service, isWS := servicePath(rl.target)
		if !isWS || !wantsWebSocket(head) {
			return
		}
		var out bytes.Buffer
		up, err := a.upgrade(&out, netip.MustParseAddrPort("127.0.0.1:1"), service, rl.target, head)
		resp := out.Bytes()
		switch {
		case err == nil:
			if up.Service != "echo" || !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) || !bytes.Contains(resp, []byte("Sec-Websocket-Accept: ")) && !bytes.Contains(resp, []byte("Sec-WebSocket-Accept: ")) {
				t.Fatalf("upgraded %q with response %q", head, resp)
			}
		default:
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 4")) && !bytes.HasPrefix(resp, []byte("HTTP/1.1 5")) {
				t.Fatalf("refused %q (%v) with response %q", head, err, resp)
			}
		}
	})
}

// FuzzWithoutToken: whatever the target, what is left has no parameter
// that Request.Token would read, and every other parameter is kept in
// order, byte for byte.
func FuzzWithoutToken(f *testing.F) {
	for _, s := range []string{"/ws/chat?token=a", "/ws/chat?room=lobby&token=abc&x=1", "/ws/c?%74oken=1", "/ws/c?a=%zz&token=", "/ws/c?&&token&", "/ws/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		out := withoutToken(target)
		if (&Request{URI: out}).Token() != "" {
			t.Fatalf("withoutToken(%q) = %q still carries a token", target, out)
		}
		path, query, _ := strings.Cut(target, "?")
		if !strings.HasPrefix(out, path) {
			t.Fatalf("withoutToken(%q) = %q changed the path", target, out)
		}
		var kept []string
		for part := range strings.SplitSeq(query, "&") {
			key, _, _ := strings.Cut(part, "=")
			if k, err := url.QueryUnescape(key); err != nil || k != "token" {
				kept = append(kept, part)
			}
		}
		if _, rest, _ := strings.Cut(out, "?"); out != target && rest != strings.Join(kept, "&") {
			t.Fatalf("withoutToken(%q) = %q, want the query %q", target, out, strings.Join(kept, "&"))
		}
	})
}
