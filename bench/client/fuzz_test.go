package client

import (
	"bytes"
	"strings"
	"testing"
)

// fuzzKey is the Sec-WebSocket-Key of every fuzzed connection, the example
// of RFC 6455, so that seeds can carry its accept value.
const fuzzKey = "dGhlIHNhbXBsZSBub25jZQ=="

type parseOutcome struct {
	open  bool
	cause string
	rest  []byte
}

// parseResponse feeds data to a fresh connection's response parser in two
// reads split at split, the way the engine would, and returns the outcome.
func parseResponse(e *Engine, data []byte, split int) parseOutcome {
	c := &Conn{e: e, h: newRecorder(1)}
	copy(c.key[:], fuzzKey)
	var out parseOutcome
	for _, p := range [][]byte{data[:split], data[split:]} {
		if c.state == stateOpen {
			out.rest = append(out.rest, p...)
			continue
		}
		rest, err := c.response(p)
		if err != nil {
			out.cause = Cause(err)
			return out
		}
		out.rest = append(out.rest, rest...)
	}
	out.open = c.state == stateOpen
	if out.open {
		e.open.Add(-1)
	}
	return out
}

// FuzzResponse checks the handshake response parser: it never panics,
// fails only with the handshake causes, accepts only a 101 carrying the
// right accept value, hands on exactly the bytes after the headers, and
// decides the same however the response is split into reads.
func FuzzResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"), uint(40))
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\n\r\n"), uint(3))
	e, err := New(Config{URL: "ws://127.0.0.1:1/"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.Close() })
	accept := acceptFor([]byte(fuzzKey))
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		at := int(split % uint(len(data)+1))
		whole := parseResponse(e, data, len(data))
		parts := parseResponse(e, data, at)

		switch c := whole.cause; {
		case c == "", c == CauseBadReply, c == CauseBadAccept, strings.HasPrefix(c, "handshake status "):
		default:
			t.Fatalf("cause %q", c)
		}
		end := bytes.Index(data, []byte("\r\n\r\n"))
		if whole.open {
			if whole.cause != "" || end < 0 || !bytes.HasPrefix(data, []byte("HTTP/1.")) || !bytes.Contains(data[:end], []byte(accept)) {
				t.Fatalf("accepted %q", data)
			}
			if !bytes.Equal(whole.rest, data[end+4:]) {
				t.Fatalf("rest %q, want %q", whole.rest, data[end+4:])
			}
		} else if whole.cause == "" && end >= 0 {
			t.Fatalf("complete headers neither accepted nor refused: %q", data)
		}
		// A single read longer than maxResponse may carry headers that the
		// same bytes over two reads would be refused for; below it the split
		// must not matter.
		if len(data) <= maxResponse && (whole.open != parts.open || whole.cause != parts.cause || !bytes.Equal(whole.rest, parts.rest)) {
			t.Fatalf("split at %d: %+v, whole: %+v", at, parts, whole)
		}
	})
}
