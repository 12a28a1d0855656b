package netpoll

import "strings"

// Event is a set of readiness conditions: the interest passed to Add and
// Mod, and the conditions reported to callbacks.
type Event uint32

// Event bits.
const (
	// Read is read readiness. Arming it also asks for ReadHup.
	Read Event = 1 << iota
	// Write is write readiness.
	Write
	// OneShot disarms the registration after one report, until Mod re-arms it
	// (arming only). It is what lets a pool goroutine own a connection's read
	// without a second report racing it.
	OneShot
	// Edge asks for edge-triggered reports (arming only).
	Edge
	// ReadHup reports that the peer shut down its writing side.
	ReadHup
	// Hup reports that both directions are shut.
	Hup
	// Err reports an error condition on the descriptor.
	Err
	// Closed is reported once to every registered callback when the poller closes.
	Closed
)

// String names the bits of e, joined by '|'.
func (e Event) String() string {
	if e == 0 {
		return "0"
	}
	names := []string{"Read", "Write", "OneShot", "Edge", "ReadHup", "Hup", "Err", "Closed"}
	var b strings.Builder
	for i, n := range names {
		if e&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}
