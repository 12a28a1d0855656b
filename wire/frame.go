package wire

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// maxControlPayload is the largest payload a control frame may carry (RFC 6455 5.5).
const maxControlPayload = 125

// maxCloseReason is what is left of a control payload after the two-byte close code.
const maxCloseReason = maxControlPayload - 2

// HeaderLen returns the length of the header of a frame carrying payload bytes.
func HeaderLen(payload int, masked bool) int {
	n := 2
	switch {
	case payload > 0xFFFF:
		n += 8
	case payload > maxControlPayload:
		n += 2
	}
	if masked {
		n += 4
	}
	return n
}

// appendHeader appends a frame header with the minimal length encoding.
// op may carry opRsv1.
func appendHeader(dst []byte, op ws.OpCode, fin bool, masked bool, n int) []byte {
	b0 := byte(op) & (0x0F | byte(opRsv1))
	if fin {
		b0 |= 0x80
	}
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case n > 0xFFFF:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	case n > maxControlPayload:
		dst = append(dst, b0, m|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, m|byte(n))
	}
	return dst
}

// AppendFrame appends one unmasked frame, as a server sends it.
func AppendFrame(dst []byte, op ws.OpCode, fin bool, p []byte) []byte {
	dst = grow(dst, HeaderLen(len(p), false)+len(p))
	dst = appendHeader(dst, op, fin, false, len(p))
	return append(dst, p...)
}

// AppendMaskedFrame appends one frame masked with key, as a client sends it. The payload is
// copied, then masked; p is not modified.
func AppendMaskedFrame(dst []byte, op ws.OpCode, fin bool, key [4]byte, p []byte) []byte {
	dst = grow(dst, HeaderLen(len(p), true)+len(p))
	dst = appendHeader(dst, op, fin, true, len(p))
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, p...)
	ws.Cipher(dst[start:], key, 0)
	return dst
}

// AppendClose appends an unmasked close frame. The reason, which must be UTF-8, is cut at a
// rune boundary to fit the 123 bytes a close payload leaves for it. A code that may not be sent
// (see ValidCloseCode; 0 and 1005 included) gives an empty payload and drops the reason.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	n := closePayloadLen(code, reason)
	dst = grow(dst, HeaderLen(n, false)+n)
	dst = appendHeader(dst, ws.OpClose, true, false, n)
	return appendClosePayload(dst, n, code, reason)
}

// AppendMaskedClose is AppendClose for a client: the frame is masked with key.
func AppendMaskedClose(dst []byte, key [4]byte, code ws.StatusCode, reason string) []byte {
	n := closePayloadLen(code, reason)
	dst = grow(dst, HeaderLen(n, true)+n)
	dst = appendHeader(dst, ws.OpClose, true, true, n)
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = appendClosePayload(dst, n, code, reason)
	ws.Cipher(dst[start:], key, 0)
	return dst
}

func closePayloadLen(code ws.StatusCode, reason string) int {
	if !ValidCloseCode(code) {
		return 0
	}
	return 2 + len(cutReason(reason))
}

func appendClosePayload(dst []byte, n int, code ws.StatusCode, reason string) []byte {
	if n == 0 {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason[:n-2]...)
}

// cutReason shortens reason to at most maxCloseReason bytes without splitting a rune.
func cutReason(reason string) string {
	if len(reason) <= maxCloseReason {
		return reason
	}
	n := maxCloseReason
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}

// grow makes room for the whole frame up front so that it costs one allocation at most.
func grow(dst []byte, n int) []byte { return slices.Grow(dst, n) }

// ParseClose splits a validated close payload into code and reason. An empty payload gives
// 1005 (no status received) and no reason. The reason aliases p.
func ParseClose(p []byte) (ws.StatusCode, []byte) {
	if len(p) < 2 {
		return ws.StatusNoStatusRcvd, nil
	}
	return ws.StatusCode(binary.BigEndian.Uint16(p)), p[2:]
}

// ValidCloseCode reports whether c may appear in a close frame: 1000-1003, 1007-1014 and
// 3000-4999. 1005, 1006 and 1015 only describe a closure locally and are never sent.
func ValidCloseCode(c ws.StatusCode) bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}
