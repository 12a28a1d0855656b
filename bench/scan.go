package bench

// textScan reads text whose parts come in a known order, such as the
// fields of a JSON object as one server writes them, without allocating.
// Each step does nothing once one has failed; ok says whether all
// matched.
type textScan struct {
	rest []byte
	ok   bool
}

func scanText(p []byte) textScan { return textScan{rest: p, ok: true} }

// lit reads the literal s.
func (t *textScan) lit(s string) {
	if t.ok {
		t.ok = len(t.rest) >= len(s) && string(t.rest[:len(s)]) == s
		if t.ok {
			t.rest = t.rest[len(s):]
		}
	}
}

// uint reads decimal digits.
func (t *textScan) uint() (n uint64) {
	if t.ok {
		n, t.rest, t.ok = cutUint(t.rest)
	}
	return n
}

// str reads a JSON string's body up to its closing quote, the opening
// one read already; one with an escape fails.
func (t *textScan) str() []byte {
	if !t.ok {
		return nil
	}
	for i, c := range t.rest {
		switch c {
		case '"':
			s := t.rest[:i]
			t.rest = t.rest[i+1:]
			return s
		case '\\':
			t.ok = false
			return nil
		}
	}
	t.ok = false
	return nil
}

// cutUint reads the decimal digits at the start of p.
func cutUint(p []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		d := uint64(p[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, p, false
		}
		n = n*10 + d
	}
	return n, p[i:], i > 0
}
