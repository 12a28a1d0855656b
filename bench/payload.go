package bench

import "encoding/binary"

// PayloadHeader is the size of the bench protocol's payload header: time,
// sender id and sequence number, 8 bytes each, big endian.
const PayloadHeader = 24

// Payload is the header of a bench message.
type Payload struct {
	// Time is when the message was due to be sent, unix ns. Latency is
	// counted from it, not from the actual send, so that a late send adds
	// its delay to the latency instead of hiding it.
	Time   int64
	Sender uint64
	Seq    uint64
}

// Put writes the header into p, which must be at least PayloadHeader long;
// the rest of p (padding) is left as it is.
func (h Payload) Put(p []byte) {
	binary.BigEndian.PutUint64(p[0:], uint64(h.Time))
	binary.BigEndian.PutUint64(p[8:], h.Sender)
	binary.BigEndian.PutUint64(p[16:], h.Seq)
}

// ParsePayload reads the header of p; false if p is too short.
func ParsePayload(p []byte) (Payload, bool) {
	if len(p) < PayloadHeader {
		return Payload{}, false
	}
	return Payload{
		Time:   int64(binary.BigEndian.Uint64(p[0:])),
		Sender: binary.BigEndian.Uint64(p[8:]),
		Seq:    binary.BigEndian.Uint64(p[16:]),
	}, true
}

// Latency is the time from when the message was due to now, in ns.
func (h Payload) Latency(now int64) int64 { return now - h.Time }

// SeqTracker accounts one sender's sequence numbers as seen by one
// receiver, for servers that keep each sender's order (the bench protocol's
// servers do): a number ahead of the next expected one is a gap of lost
// messages, one behind it a duplicate.
type SeqTracker struct {
	Next uint64 // the next expected sequence number
	Gaps uint64 // numbers skipped
	Dups uint64 // numbers seen again
}

// See accounts seq.
func (t *SeqTracker) See(seq uint64) {
	switch {
	case seq == t.Next:
		t.Next++
	case seq > t.Next:
		t.Gaps += seq - t.Next
		t.Next = seq + 1
	default:
		t.Dups++
	}
}

// Distinct is the number of different sequence numbers seen.
func (t *SeqTracker) Distinct() uint64 { return t.Next - t.Gaps }
