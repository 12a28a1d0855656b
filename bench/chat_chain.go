package bench

import (
	"slices"
	"sort"
	"sync"
)

// chatArrival is one copy of a chat message reaching one member: a live
// message event, or an item of a joined or history reply.
type chatArrival struct {
	Seq, Prev uint64
	// Hist marks a copy from a joined or history reply, and After is the
	// "after" its request named (0: none): a copy at or below it was not
	// asked for.
	Hist  bool
	After uint64
	// Gen is the member's connection it came on, counting from 1 through
	// reconnects.
	Gen uint32
	// Due is the due time of a bench message (0 for any other); Now is
	// when the copy arrived. Both unix ns.
	Due int64
	Now int64
}

// chatRecent is how many of the last shown messages a chain remembers, to
// tell a second copy of one from a message that is not in the chain. Extra
// copies come near the chain's end (a live copy that raced the history of
// a join), so a window this long sees them all.
const chatRecent = 256

// chatChain is one member's view of one room, kept by the rule of
// PROTOCOL.md ("Ordering: no gap, no duplicate"): a message is shown when
// its prev is the last seq shown; one whose prev is further on waits for
// the messages between; a copy of a message already shown or waiting is
// dropped. Every copy the rule drops or cannot place is counted by why:
//
//   - Dups: copies the protocol does not let the server send: a second
//     live copy on one connection, or a history item at or below the
//     "after" its request named;
//   - Overlaps: copies the protocol allows and the rule drops: a live copy
//     of a message a join's history also held, or one that came on a new
//     connection after the old one had it;
//   - OutOfOrder: messages the chain has no place for: one that follows a
//     message before the last shown, a second message after the same
//     predecessor (a fork), a message behind the last shown that was never
//     shown;
//   - Reordered: messages that arrived before their predecessor and were
//     shown once it came (the protocol allows this; not an error).
//
// Messages still waiting at the end (Waiting) sit after a gap nothing
// filled. What a member should have received but never showed is counted
// at the end, against the seqs the senders were given (finishChat).
//
// A chatChain is used by one goroutine at a time (its user's lock).
type chatChain struct {
	// Start is the seq the member's stream begins after: the last message
	// of its first join's history (0 for an empty room). Last is the last
	// seq shown, Shown how many were shown after Start.
	Start, Last, Shown uint64

	Dups, Overlaps, OutOfOrder, Reordered uint64

	recent  []chainCopy   // the last shown, ascending by seq
	waiting []chatArrival // arrived before their predecessor
}

// chainCopy is how a shown message came.
type chainCopy struct {
	seq  uint64
	hist bool
	gen  uint32
}

// begin starts the chain after a first join: last is the last seq of its
// history (0 for none), hist the seqs of that history, which are shown but
// before the member's stream; gen is the connection they came on.
func (c *chatChain) begin(last uint64, hist []uint64, gen uint32) {
	c.Start, c.Last, c.Shown = last, last, 0
	c.recent = c.recent[:0]
	for _, s := range hist {
		c.remember(chainCopy{seq: s, hist: true, gen: gen})
	}
	c.waiting = c.waiting[:0]
}

// arrive applies the rule to a. show is called for each message that
// becomes shown, a itself or waiting ones that a lets through, with the
// time they are shown (a.Now).
func (c *chatChain) arrive(a chatArrival, show func(m chatArrival, now int64)) {
	switch {
	case a.Seq <= a.Prev:
		// A message numbered before its own predecessor.
		c.OutOfOrder++
		return
	case a.Hist && a.Seq <= a.After:
		c.Dups++
		return
	case a.Seq <= c.Last:
		c.behind(a)
		return
	}
	if i := c.waitingAt(a.Seq); i >= 0 {
		w := c.waiting[i]
		c.copyOf(w.Hist, w.Gen, a)
		return
	}
	switch {
	case a.Prev == c.Last:
		c.show(a, a.Now, show)
		c.release(a.Now, show)
	case a.Prev > c.Last:
		for _, w := range c.waiting {
			if w.Prev == a.Prev {
				// Two messages after one predecessor: the chain forked.
				c.OutOfOrder++
				return
			}
		}
		c.waiting = append(c.waiting, a)
	default:
		// It follows a message before the last shown: whatever came
		// between was not its chain.
		c.OutOfOrder++
	}
}

// behind handles a copy of a seq at or below Last.
func (c *chatChain) behind(a chatArrival) {
	i, found := sort.Find(len(c.recent), func(i int) int { return cmpSeq(a.Seq, c.recent[i].seq) })
	switch {
	case found:
		r := c.recent[i]
		c.copyOf(r.hist, r.gen, a)
	case i == 0 && len(c.recent) == chatRecent:
		// Older than the remembered window. A history item was asked for
		// (it is above its after): let it pass as a copy; a live copy
		// this late is a redelivery.
		if a.Hist {
			c.Overlaps++
		} else {
			c.Dups++
		}
	default:
		// Within what is remembered, yet never shown: not this chain's.
		c.OutOfOrder++
	}
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// copyOf counts a, a second copy of a message that came first as a
// history item (hist) or live on connection gen.
func (c *chatChain) copyOf(hist bool, gen uint32, a chatArrival) {
	if !hist && !a.Hist && gen == a.Gen {
		c.Dups++
		return
	}
	c.Overlaps++
}

func (c *chatChain) waitingAt(seq uint64) int {
	for i, w := range c.waiting {
		if w.Seq == seq {
			return i
		}
	}
	return -1
}

func (c *chatChain) show(a chatArrival, now int64, show func(chatArrival, int64)) {
	c.Last = a.Seq
	c.Shown++
	c.remember(chainCopy{seq: a.Seq, hist: a.Hist, gen: a.Gen})
	show(a, now)
}

func (c *chatChain) remember(r chainCopy) {
	if n := len(c.recent); n > 0 && r.seq <= c.recent[n-1].seq {
		return
	}
	if len(c.recent) == chatRecent {
		c.recent = append(c.recent[:0], c.recent[1:]...)
	}
	c.recent = append(c.recent, r)
}

// release shows the waiting messages the last one shown lets through, and
// drops those it passed by.
func (c *chatChain) release(now int64, show func(chatArrival, int64)) {
	for moved := true; moved; {
		moved = false
		for i := 0; i < len(c.waiting); i++ {
			w := c.waiting[i]
			switch {
			case w.Prev == c.Last:
				c.waiting = slices.Delete(c.waiting, i, i+1)
				c.Reordered++
				c.show(w, now, show)
				moved = true
			case w.Seq <= c.Last:
				// The chain went past it another way.
				c.waiting = slices.Delete(c.waiting, i, i+1)
				c.behind(w)
			default:
				continue
			}
			i--
		}
	}
}

// Waiting is how many messages wait for a predecessor.
func (c *chatChain) Waiting() int { return len(c.waiting) }

// oldestWait is when the message waiting longest arrived (0: none waits).
func (c *chatChain) oldestWait() int64 {
	var t int64
	for _, w := range c.waiting {
		if t == 0 || w.Now < t {
			t = w.Now
		}
	}
	return t
}

// seqSet is the sorted set of seqs the members of one room in this
// process showed: what finishChat compares the senders' seqs with. Members
// show a room's messages in the same order at about the same time, so an
// add nearly always lands at the end.
type seqSet struct {
	mu   sync.Mutex
	seqs []uint64
}

func (s *seqSet) add(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.seqs)
	for i := n - 1; i >= 0 && i >= n-8; i-- {
		switch v := s.seqs[i]; {
		case v == seq:
			return
		case v < seq:
			s.seqs = slices.Insert(s.seqs, i+1, seq)
			return
		}
	}
	i, found := slices.BinarySearch(s.seqs, seq)
	if !found {
		s.seqs = slices.Insert(s.seqs, i, seq)
	}
}

// sorted returns the set, ascending.
func (s *seqSet) sorted() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}
