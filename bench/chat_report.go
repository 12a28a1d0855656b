package bench

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ChatStats is the chat scenario's part of a report: its setup, the says
// and their answers, the reconnects, and the chain checks of every
// member. Sent and Parts carry what each bench process saw, so that the
// expected deliveries are counted once every process's says are known
// (finishChat); the finished report leaves them out.
type ChatStats struct {
	Users        int     `json:"users"`
	Rooms        int     `json:"rooms"`
	RoomsPerUser int     `json:"rooms_per_user"`
	Zipf         float64 `json:"zipf"`
	// Memberships is the number of (user, room) pairs; the room sizes
	// are members per room.
	Memberships int `json:"memberships"`
	RoomsUsed   int `json:"rooms_used"`
	Largest     int `json:"largest_room"`
	Median      int `json:"median_room"`
	Smallest    int `json:"smallest_room"`
	// SetupSec is the time from the first dial until every user was
	// logged in and in its rooms; Registered and LoggedIn count how they
	// came in (a user whose name was taken logs in: a rerun).
	SetupSec   float64 `json:"setup_seconds"`
	Registered int64   `json:"registered"`
	LoggedIn   int64   `json:"logged_in"`
	SetUp      int64   `json:"set_up"`

	// Answered says got their sent; SayErrors the others' error codes;
	// Unanswered got neither; Skipped were not sent, no user of the
	// process being in its rooms at the time.
	Answered   uint64            `json:"answered"`
	SayErrors  map[string]uint64 `json:"say_errors,omitempty"`
	Unanswered uint64            `json:"unanswered"`
	Skipped    uint64            `json:"skipped"`

	// Reconnects: the planned drops done cleanly (close handshake) and
	// abruptly (reset), those skipped (the user was away already), drops
	// by the server or the network, and how many came back into all their
	// rooms.
	Planned      int   `json:"planned_drops"`
	Clean        int64 `json:"clean_drops"`
	Abrupt       int64 `json:"abrupt_drops"`
	DropsSkipped int64 `json:"drops_skipped"`
	ServerDrops  int64 `json:"server_drops"`
	Resumed      int64 `json:"resumed"`

	// The chain checks (chatChain): Overlaps and Reordered are what the
	// protocol allows; duplicates (in Messages), OutOfOrder, Waiting (stuck
	// behind a gap at the end), EpochChanges and Absent (members not in
	// their room at the end) are faults. Fetches counts history requests
	// after a message waited a second (rule 4), Presence the presence
	// events received.
	Overlaps     uint64 `json:"overlaps"`
	Reordered    uint64 `json:"reordered"`
	OutOfOrder   uint64 `json:"out_of_order"`
	Waiting      uint64 `json:"waiting"`
	Fetches      uint64 `json:"fetches"`
	EpochChanges uint64 `json:"epoch_changes"`
	Absent       int64  `json:"absent"`
	Presence     uint64 `json:"presence"`

	// Sent[r] are the seqs the server's sent replies gave the says to room
	// r; Parts what each process's members showed. Both are consumed by
	// finishChat.
	Sent  [][]uint64 `json:"sent,omitempty"`
	Parts []ChatPart `json:"parts,omitempty"`
}

// ChatPart is what the members held by one bench process showed.
type ChatPart struct {
	// Shown[r] is the sorted set of seqs that members of room r showed
	// after their start.
	Shown   [][]uint64    `json:"shown"`
	Members []ChatMembers `json:"members"`
}

// ChatMembers are N members of Room whose chains were alike: started
// after Start, showed Shown messages up to Last, and were (Present) or
// were not in the room at the end.
type ChatMembers struct {
	Room    int    `json:"room"`
	Start   uint64 `json:"start"`
	Last    uint64 `json:"last"`
	Shown   uint64 `json:"shown"`
	Present bool   `json:"present"`
	N       int64  `json:"n"`
}

// merge adds another process's figures to s.
func (s *ChatStats) merge(o *ChatStats) error {
	if o.Rooms != s.Rooms || len(o.Sent) != len(s.Sent) {
		return fmt.Errorf("%w: chat rooms differ between children", ErrChild)
	}
	s.SetupSec = max(s.SetupSec, o.SetupSec)
	s.Registered += o.Registered
	s.LoggedIn += o.LoggedIn
	s.SetUp += o.SetUp
	s.Answered += o.Answered
	for k, v := range o.SayErrors {
		if s.SayErrors == nil {
			s.SayErrors = map[string]uint64{}
		}
		s.SayErrors[k] += v
	}
	s.Unanswered += o.Unanswered
	s.Skipped += o.Skipped
	s.Planned += o.Planned
	s.Clean += o.Clean
	s.Abrupt += o.Abrupt
	s.DropsSkipped += o.DropsSkipped
	s.ServerDrops += o.ServerDrops
	s.Resumed += o.Resumed
	s.Overlaps += o.Overlaps
	s.Reordered += o.Reordered
	s.OutOfOrder += o.OutOfOrder
	s.Waiting += o.Waiting
	s.Fetches += o.Fetches
	s.EpochChanges += o.EpochChanges
	s.Absent += o.Absent
	s.Presence += o.Presence
	for r := range s.Sent {
		s.Sent[r] = append(s.Sent[r], o.Sent[r]...)
	}
	s.Parts = append(s.Parts, o.Parts...)
	return nil
}

// mergeChat adds a child's chat figures to the merged report out.
func mergeChat(out, p *Report) error {
	if p.Chat == nil {
		return nil
	}
	if out.Chat == nil {
		c := *p.Chat
		c.SayErrors = maps.Clone(c.SayErrors)
		c.Sent = make([][]uint64, len(p.Chat.Sent))
		for r := range c.Sent {
			c.Sent[r] = slices.Clone(p.Chat.Sent[r])
		}
		c.Parts = slices.Clone(p.Chat.Parts)
		out.Chat = &c
		return nil
	}
	return out.Chat.merge(p.Chat)
}

// finishChat counts the deliveries expected and lost once every
// process's says are known. A member is expected to show every message a
// say got a sent for, in its room, after its start: all of them when it
// was in the room at the end, those up to the last it showed when it was
// not (it is counted Absent instead). A member showed an expected message
// when its chain reached it and the members of its process showed it:
// chains are continuous, so everything between a member's start and its
// last is what the room's chain holds there.
func finishChat(r *Report) {
	cs := r.Chat
	if cs == nil || cs.Sent == nil {
		return
	}
	m := &r.Messages
	m.Expected, m.Lost, m.MembersWithLoss = 0, 0, 0
	for room := range cs.Sent {
		slices.Sort(cs.Sent[room])
		cs.Sent[room] = slices.Compact(cs.Sent[room])
	}
	for _, part := range cs.Parts {
		for _, g := range part.Members {
			if g.Room < 0 || g.Room >= len(cs.Sent) || g.Room >= len(part.Shown) {
				continue
			}
			sent, shown := cs.Sent[g.Room], part.Shown[g.Room]
			// The expected: sent seqs above Start (up to Last if absent).
			lo, _ := slices.BinarySearch(sent, g.Start+1)
			hi := len(sent)
			if !g.Present {
				hi, _ = slices.BinarySearch(sent, g.Last+1)
				hi = max(hi, lo)
			}
			// Those up to Last were shown if the process's members showed
			// them; those past Last were not.
			mid, _ := slices.BinarySearch(sent, g.Last+1)
			mid = min(max(mid, lo), hi)
			var lost uint64
			for _, s := range sent[lo:mid] {
				if _, ok := slices.BinarySearch(shown, s); !ok {
					lost++
				}
			}
			lost += uint64(hi - mid)
			// A chain that showed fewer than the process's members did in
			// its range disagrees with theirs.
			a, _ := slices.BinarySearch(shown, g.Start+1)
			b, _ := slices.BinarySearch(shown, g.Last+1)
			if b > a && uint64(b-a) > g.Shown {
				cs.OutOfOrder += (uint64(b-a) - g.Shown) * uint64(g.N)
			}
			m.Expected += uint64(hi-lo) * uint64(g.N)
			m.Lost += lost * uint64(g.N)
			if lost > 0 {
				m.MembersWithLoss += g.N
			}
		}
	}
	cs.Sent, cs.Parts = nil, nil
}

// failure returns ErrDelivery when the chat's checks found a fault:
// a message lost, duplicated or out of order, a member stuck behind a
// gap or not back in its room, a history epoch that changed.
func (s *ChatStats) failure(m MessageStats) error {
	if s == nil {
		return nil
	}
	var faults []string
	add := func(n uint64, what string) {
		if n > 0 {
			faults = append(faults, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(m.Lost, "lost")
	add(m.Duplicated, "duplicated")
	add(s.OutOfOrder, "out of order")
	add(s.Waiting, "stuck behind a gap")
	add(uint64(s.Absent), "members not back in their room")
	add(s.EpochChanges, "epoch changes")
	if len(faults) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDelivery, strings.Join(faults, ", "))
}

// rows adds the chat's lines to a report table.
func (s *ChatStats) rows(row func(k, f string, a ...any)) {
	row("chat users", "%d users, %d rooms, %d per user (zipf %.2f): %d memberships", s.Users, s.Rooms, s.RoomsPerUser, s.Zipf, s.Memberships)
	row("room sizes", "largest %d, median %d, smallest %d members (%d rooms with members)", s.Largest, s.Median, s.Smallest, s.RoomsUsed)
	row("setup", "%d of %d users in their rooms in %.1fs (%d registered, %d logged in)", s.SetUp, s.Users, s.SetupSec, s.Registered, s.LoggedIn)
	errs := "none"
	if len(s.SayErrors) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(s.SayErrors)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, s.SayErrors[k]))
		}
		errs = strings.Join(parts, ", ")
	}
	row("says", "%d answered sent, %d unanswered, %d skipped; errors: %s", s.Answered, s.Unanswered, s.Skipped, errs)
	row("reconnects", "%d planned: %d clean, %d abrupt, %d skipped; %d dropped by the server; %d resumed",
		s.Planned, s.Clean, s.Abrupt, s.DropsSkipped, s.ServerDrops, s.Resumed)
	row("chain faults", "%d out of order, %d stuck behind a gap, %d members absent, %d epoch changes", s.OutOfOrder, s.Waiting, s.Absent, s.EpochChanges)
	row("chain, allowed", "%d overlapping copies dropped, %d reordered, %d history fetches; %d presence events", s.Overlaps, s.Reordered, s.Fetches, s.Presence)
}
