package client

import (
	"fmt"
	"net/netip"
	"strings"
)

// Addr is a source address.
type Addr = netip.Addr

// ParseSources parses a source address range "A-B" (both IPv4, same /24 not
// required) or a comma list of addresses and ranges into the addresses it
// names, in order.
func ParseSources(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%w: %q", ErrBadSource, part)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil || !b.Is4() || b.Less(a) {
			return nil, fmt.Errorf("%w: %q", ErrBadSource, part)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if x == b {
				break
			}
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("%w: %q has more than 65536 addresses", ErrBadSource, part)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadSource)
	}
	return out, nil
}

// DefaultSources is the range used against a loopback target when none is
// given: every address of 127.0.0.0/8 Linux answers on without setup, each
// bringing its own ephemeral ports.
const DefaultSources = "127.0.0.2-127.0.0.254"
