package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"time"
)

// chatPlan is who is in which room and who drops when: computed from the
// flags alone, so that every bench process of a run has the same plan and
// each plays its own users' part of it.
type chatPlan struct {
	users, rooms int
	// userRooms[u] are user u's rooms, by room index.
	userRooms [][]int32
	// sizes[r] is the number of members of room r.
	sizes []int
	// drops are the planned reconnects, by time.
	drops []chatDrop
}

// chatDrop is one planned reconnect: user User drops its connection At
// after the start of the talk (abruptly or with a close handshake) and
// comes back after the pause.
type chatDrop struct {
	User   int
	At     time.Duration
	Abrupt bool
}

// planChatRooms gives each of users perUser distinct rooms out of rooms,
// drawn with Zipf weights: room r (from 0) weighs 1/(r+1)^skew, so room 0
// is the largest and skew 0 is uniform. While there are at least as many
// users as rooms, user r takes room r first, so that no room is empty.
// The draws are seeded by seed and the user's index.
func planChatRooms(users, rooms, perUser int, skew float64, seed uint64) *chatPlan {
	p := &chatPlan{users: users, rooms: rooms, userRooms: make([][]int32, users), sizes: make([]int, rooms)}
	perUser = min(perUser, rooms)
	cdf := make([]float64, rooms)
	total := 0.0
	for r := range rooms {
		total += 1 / math.Pow(float64(r+1), skew)
		cdf[r] = total
	}
	for u := range users {
		rng := rand.New(rand.NewPCG(seed, uint64(u)))
		mine := make([]int32, 0, perUser)
		if users >= rooms && u < rooms {
			mine = append(mine, int32(u))
		}
		for tries := 0; len(mine) < perUser; tries++ {
			r := int32(sort.SearchFloat64s(cdf, rng.Float64()*total))
			if tries > 64*perUser {
				// A heavy skew keeps drawing the same few rooms: take the
				// largest not yet taken.
				r = 0
				for slices.Contains(mine, r) {
					r++
				}
			}
			if r < int32(rooms) && !slices.Contains(mine, r) {
				mine = append(mine, r)
			}
		}
		p.userRooms[u] = mine
		for _, r := range mine {
			p.sizes[r]++
		}
	}
	return p
}

// planDrops spreads n reconnects over the users, evenly by index (so
// over every bench process), at times evenly spread over the middle of a
// talk of length d, from a fifth of it to seven tenths, leaving time to
// come back before it ends; every other one is abrupt.
func (p *chatPlan) planDrops(n int, d time.Duration) {
	n = min(n, p.users)
	p.drops = make([]chatDrop, n)
	for i := range n {
		p.drops[i] = chatDrop{
			User:   int((float64(i) + 0.5) * float64(p.users) / float64(n)),
			At:     d/5 + time.Duration((float64(i)+0.5)/float64(n)*float64(d/2)),
			Abrupt: i%2 == 1,
		}
	}
}

// sizeSummary is the room size distribution for the report: largest,
// median and smallest room, and the rooms that have members.
func (p *chatPlan) sizeSummary() (largest, median, smallest, used int) {
	s := slices.Clone(p.sizes)
	slices.Sort(s)
	for _, v := range s {
		if v > 0 {
			used++
		}
	}
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	return s[len(s)-1], s[len(s)/2], s[0], used
}

// chatUserName and chatRoomName name user u and room r of a run whose
// names start with prefix.
func chatUserName(prefix string, u int) string { return prefix + "u" + strconv.Itoa(u) }
func chatRoomName(prefix string, r int) string { return prefix + "r" + strconv.Itoa(r) }
