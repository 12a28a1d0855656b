package acceptor

import (
	"bytes"
	"strings"
)

// headEnd returns the length of the request head in p, including the blank
// line that ends it, or -1 when the head is not complete yet. Bare LF line
// ends are accepted, as gobwas/ws's reader accepts them.
func headEnd(p []byte) int {
	off := 0
	for {
		i := bytes.IndexByte(p[off:], '\n')
		if i < 0 {
			return -1
		}
		i += off
		// p[i] ends a line; the head ends if the next line is empty.
		switch {
		case i+1 < len(p) && p[i+1] == '\n':
			return i + 2
		case i+2 < len(p) && p[i+1] == '\r' && p[i+2] == '\n':
			return i + 3
		}
		off = i + 1
	}
}

// requestLine is the parsed first line of a request head.
type requestLine struct {
	method, target string
}

// parseRequestLine reads "METHOD SP target SP HTTP/x.y". ok is false when
// the line is not shaped like a request line at all.
func parseRequestLine(head []byte) (rl requestLine, ok bool) {
	line := head
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSuffix(line, []byte{'\r'})
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return rl, false
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 || !bytes.HasPrefix(rest[sp2+1:], []byte("HTTP/")) {
		return rl, false
	}
	return requestLine{method: string(line[:sp1]), target: string(rest[:sp2])}, true
}

// wantsWebSocket reports whether the head carries an Upgrade header whose
// value names websocket. Header names are matched case-insensitively.
func wantsWebSocket(head []byte) bool {
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			i = len(head)
		}
		line := head[:i]
		head = head[min(i+1, len(head)):]
		colon := bytes.IndexByte(line, ':')
		if colon != len("upgrade") || !strings.EqualFold(string(line[:colon]), "upgrade") {
			continue
		}
		for _, tok := range strings.Split(string(line[colon+1:]), ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "websocket") {
				return true
			}
		}
	}
	return false
}

// servicePath extracts the service name from a target "/ws/<service>",
// optionally followed by a query. ok is false for other targets.
func servicePath(target string) (service string, ok bool) {
	path := target
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	name, found := strings.CutPrefix(path, "/ws/")
	if !found {
		return "", false
	}
	return name, true
}
