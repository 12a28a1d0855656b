package wire

import "unicode/utf8"

// UTF8 is an incremental UTF-8 validator for text that arrives in pieces. The zero value is at
// a character boundary. It is 3 bytes.
type UTF8 struct {
	need   uint8 // continuation bytes still expected
	lo, hi uint8 // range of the next continuation byte
}

// Write validates the next piece of the text. It returns false as soon as p contains a byte
// that cannot continue valid UTF-8 (RFC 3629), so a peer sending invalid text is caught
// without waiting for the rest of the message. After false the state is undefined until Reset.
func (v *UTF8) Write(p []byte) bool {
	i := 0
	// Finish a sequence left open by the previous piece.
	for v.need > 0 {
		if i == len(p) {
			return true
		}
		if c := p[i]; c < v.lo || c > v.hi {
			return false
		}
		v.need--
		v.lo, v.hi = 0x80, 0xBF
		i++
	}
	if i == len(p) {
		return true
	}
	// The body up to the last character boundary goes to utf8.Valid, which is fast on long
	// runs; only an incomplete sequence at the end needs the state machine.
	cut := tailStart(p[i:]) + i
	if cut > i && !utf8.Valid(p[i:cut]) {
		return false
	}
	return v.step(p[cut:])
}

// Complete reports whether the text written so far ends at a character boundary.
func (v *UTF8) Complete() bool { return v.need == 0 }

// Reset returns v to a character boundary.
func (v *UTF8) Reset() { *v = UTF8{} }

// tailStart returns the index of a lead byte near the end of p whose sequence would run past
// the end, or len(p) when p does not end inside a sequence.
func tailStart(p []byte) int {
	for j := len(p) - 1; j >= 0 && j >= len(p)-3; j-- {
		c := p[j]
		if c < 0x80 {
			return len(p)
		}
		if c >= 0xC0 {
			if j+seqLen(c) > len(p) {
				return j
			}
			return len(p)
		}
	}
	return len(p)
}

// seqLen is the length of the sequence a lead byte announces; invalid leads get 1 so that they
// stay in the body, where utf8.Valid rejects them, unless the state machine sees them first.
func seqLen(c byte) int {
	switch {
	case c >= 0xF0:
		return 4
	case c >= 0xE0:
		return 3
	case c >= 0xC0:
		return 2
	}
	return 1
}

// step runs the byte-wise state machine of RFC 3629's table over p, starting at a character
// boundary or inside the sequence described by v.
func (v *UTF8) step(p []byte) bool {
	for _, c := range p {
		if v.need > 0 {
			if c < v.lo || c > v.hi {
				return false
			}
			v.need--
			v.lo, v.hi = 0x80, 0xBF
			continue
		}
		switch {
		case c < 0x80:
			continue
		case c < 0xC2: // continuation without a lead, or overlong C0/C1
			return false
		case c < 0xE0:
			v.need, v.lo, v.hi = 1, 0x80, 0xBF
		case c == 0xE0: // E0 80-9F would be overlong
			v.need, v.lo, v.hi = 2, 0xA0, 0xBF
		case c == 0xED: // ED A0-BF would be a surrogate
			v.need, v.lo, v.hi = 2, 0x80, 0x9F
		case c < 0xF0:
			v.need, v.lo, v.hi = 2, 0x80, 0xBF
		case c == 0xF0: // F0 80-8F would be overlong
			v.need, v.lo, v.hi = 3, 0x90, 0xBF
		case c < 0xF4:
			v.need, v.lo, v.hi = 3, 0x80, 0xBF
		case c == 0xF4: // F4 90 and above would pass U+10FFFF
			v.need, v.lo, v.hi = 3, 0x80, 0x8F
		default: // F5-FF never appear
			return false
		}
	}
	return true
}
