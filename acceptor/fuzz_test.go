package acceptor

import (
	"bytes"
	"net/netip"
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
