package bench

import (
	"slices"
	"strconv"
	"testing"
)

// feed runs arrivals through a chain begun after start and returns the
// seqs shown, in order.
func feed(c *chatChain, arrivals ...chatArrival) []uint64 {
	var shown []uint64
	for _, a := range arrivals {
		c.arrive(a, func(m chatArrival, _ int64) { shown = append(shown, m.Seq) })
	}
	return shown
}

// live is a live copy on connection gen.
func live(seq, prev uint64, gen uint32) chatArrival {
	return chatArrival{Seq: seq, Prev: prev, Gen: gen}
}

// hist is a history item of a request that named after.
func hist(seq, prev, after uint64, gen uint32) chatArrival {
	return chatArrival{Seq: seq, Prev: prev, Hist: true, After: after, Gen: gen}
}

type chainCounts struct{ shown, dups, overlaps, ooo, reordered, waiting int }

func countsOf(c *chatChain) chainCounts {
	return chainCounts{int(c.Shown), int(c.Dups), int(c.Overlaps), int(c.OutOfOrder), int(c.Reordered), c.Waiting()}
}

// Each kind of fault a server could commit is caught and told apart from
// what the protocol allows. Seqs are global (other rooms' messages fall
// between a room's), so the chains below skip numbers.
func TestChatChain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    uint64
		history  []uint64
		arrivals []chatArrival
		shown    []uint64
		want     chainCounts
	}{
		{"in order", 3, []uint64{1, 3}, []chatArrival{live(5, 3, 1), live(9, 5, 1), live(10, 9, 1)},
			[]uint64{5, 9, 10}, chainCounts{shown: 3}},
		{"first message of a room", 0, nil, []chatArrival{live(7, 0, 1), live(8, 7, 1)},
			[]uint64{7, 8}, chainCounts{shown: 2}},
		// 9 is lost: 10 waits for it for good.
		{"gap", 3, nil, []chatArrival{live(5, 3, 1), live(10, 9, 1), live(12, 10, 1)},
			[]uint64{5}, chainCounts{shown: 1, waiting: 2}},
		{"duplicate live copy", 3, nil, []chatArrival{live(5, 3, 1), live(9, 5, 1), live(5, 3, 1)},
			[]uint64{5, 9}, chainCounts{shown: 2, dups: 1}},
		{"duplicate of a waiting copy", 3, nil, []chatArrival{live(9, 5, 1), live(9, 5, 1), live(5, 3, 1)},
			[]uint64{5, 9}, chainCounts{shown: 2, dups: 1, reordered: 1}},
		// The protocol lets live copies arrive out of order: 9 waits for
		// 5 and is shown once it comes.
		{"reordered", 3, nil, []chatArrival{live(9, 5, 1), live(12, 9, 1), live(5, 3, 1)},
			[]uint64{5, 9, 12}, chainCounts{shown: 3, reordered: 2}},
		// 6 claims the predecessor 3 after 5 already followed it.
		{"fork after a shown message", 3, nil, []chatArrival{live(5, 3, 1), live(6, 3, 1), live(9, 5, 1)},
			[]uint64{5, 9}, chainCounts{shown: 2, ooo: 1}},
		{"fork among waiting messages", 3, nil, []chatArrival{live(9, 5, 1), live(10, 5, 1), live(5, 3, 1)},
			[]uint64{5, 9}, chainCounts{shown: 2, ooo: 1, reordered: 1}},
		// 4 is behind the last shown and was never shown.
		{"behind and never shown", 3, []uint64{1, 3}, []chatArrival{live(5, 3, 1), live(9, 5, 1), live(4, 3, 1)},
			[]uint64{5, 9}, chainCounts{shown: 2, ooo: 1}},
		{"seq not after prev", 3, nil, []chatArrival{live(5, 5, 1), live(2, 4, 1)},
			nil, chainCounts{ooo: 2}},
		// A live copy that also came in the join's history is the
		// protocol's overlap, not a duplicate.
		{"live copy of the join's history", 3, []uint64{1, 3}, []chatArrival{live(3, 1, 1), live(5, 3, 1)},
			[]uint64{5}, chainCounts{shown: 1, overlaps: 1}},
		// After a reconnect (gen 2) the join with after=9 brings 12 and
		// 14; the live copy of 14 on gen 2 overlaps, a second one is a
		// duplicate.
		{"resume", 3, nil, []chatArrival{live(5, 3, 1), live(9, 5, 1), hist(12, 9, 9, 2), live(14, 12, 2), hist(14, 12, 9, 2), live(14, 12, 2), live(15, 14, 2)},
			[]uint64{5, 9, 12, 14, 15}, chainCounts{shown: 5, overlaps: 1, dups: 1}},
		// A history that repeats what its after excluded.
		{"history below after", 3, nil, []chatArrival{live(5, 3, 1), live(9, 5, 1), hist(9, 5, 9, 2), hist(12, 9, 9, 2)},
			[]uint64{5, 9, 12}, chainCounts{shown: 3, dups: 1}},
		// A copy that came live on the old connection and again live on
		// the new one: the protocol's rule drops it, and it is no fault
		// of the server's (the message was published after the new
		// connection subscribed).
		{"live copy on a new connection", 3, nil, []chatArrival{live(5, 3, 1), live(5, 3, 2), live(9, 5, 2)},
			[]uint64{5, 9}, chainCounts{shown: 2, overlaps: 1}},
		// A history reply fills a gap a live copy left.
		{"gap filled by history", 3, nil, []chatArrival{live(5, 3, 1), live(10, 9, 1), hist(9, 5, 5, 1), hist(10, 9, 5, 1)},
			[]uint64{5, 9, 10}, chainCounts{shown: 3, reordered: 1, overlaps: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c chatChain
			c.begin(tc.start, tc.history, 1)
			shown := feed(&c, tc.arrivals...)
			if !slices.Equal(shown, tc.shown) {
				t.Errorf("shown %v, want %v", shown, tc.shown)
			}
			if got := countsOf(&c); got != tc.want {
				t.Errorf("counts %+v, want %+v", got, tc.want)
			}
			if c.Start != tc.start {
				t.Errorf("start %d, want %d", c.Start, tc.start)
			}
			if len(tc.shown) > 0 && c.Last != tc.shown[len(tc.shown)-1] {
				t.Errorf("last %d, want %d", c.Last, tc.shown[len(tc.shown)-1])
			}
		})
	}
}

// A live copy far behind the remembered window is a redelivery; a history
// item there was asked for.
func TestChatChainOldCopies(t *testing.T) {
	var c chatChain
	c.begin(0, nil, 1)
	prev := uint64(0)
	for s := uint64(1); s <= chatRecent+10; s++ {
		feed(&c, live(s, prev, 1))
		prev = s
	}
	feed(&c, live(2, 1, 1), hist(3, 2, 1, 2))
	if c.Dups != 1 || c.Overlaps != 1 || c.OutOfOrder != 0 || c.Shown != chatRecent+10 {
		t.Fatalf("counts %+v", countsOf(&c))
	}
}

func TestChatChainOldestWait(t *testing.T) {
	var c chatChain
	c.begin(3, nil, 1)
	a, b := live(10, 9, 1), live(12, 10, 1)
	a.Now, b.Now = 200, 100
	feed(&c, a, b)
	if c.oldestWait() != 100 || c.Waiting() != 2 {
		t.Fatalf("oldest wait %d of %d", c.oldestWait(), c.Waiting())
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, v := range []uint64{5, 7, 7, 9, 1, 6, 20, 11, 12, 13, 14, 15, 16, 17, 18, 2, 9} {
		s.add(v)
	}
	if got, want := s.sorted(), []uint64{1, 2, 5, 6, 7, 9, 11, 12, 13, 14, 15, 16, 17, 18, 20}; !slices.Equal(got, want) {
		t.Fatalf("set %v, want %v", got, want)
	}
}

// BenchmarkChatDelivery is what one delivery costs the bench: reading the
// message event, its text, and the member's chain and its room's set.
func BenchmarkChatDelivery(b *testing.B) {
	var frames [][]byte
	for i := range 1000 {
		seq := uint64(2*i + 2)
		text := appendChatText(nil, Payload{Time: 1767323045678901234, Sender: 42, Seq: uint64(i)}, 64)
		f := `{"type":"message","room":"bench-r3","user":"bench-u42","text":"` + string(text) + `","seq":` + strconv.FormatUint(seq, 10) +
			`,"prev":` + strconv.FormatUint(seq-2, 10) + `,"ts":"2026-01-12T09:41:07.512Z","epoch":"1767323045678901234"}`
		frames = append(frames, []byte(f))
	}
	var c chatChain
	var set seqSet
	show := func(a chatArrival, _ int64) { set.add(a.Seq) }
	b.ReportAllocs()
	b.SetBytes(int64(len(frames[0])))
	for i := 0; b.Loop(); i++ {
		if i%len(frames) == 0 {
			c.begin(0, nil, 1)
			set.seqs = set.seqs[:0]
		}
		m, ok := parseChatMessage(frames[i%len(frames)])
		pl, ok2 := parseChatText(m.text)
		if !ok || !ok2 {
			b.Fatal("not read")
		}
		c.arrive(chatArrival{Seq: m.seq, Prev: m.prev, Gen: 1, Due: pl.Time, Now: pl.Time + 1}, show)
	}
	if c.Dups+c.OutOfOrder != 0 {
		b.Fatalf("chain faults %+v", countsOf(&c))
	}
}
