package shard

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// stats are the shard's counters, reported in its life records and from
// there in the supervisor's /metrics.
type stats struct {
	upgrades       atomic.Uint64
	messagesIn     atomic.Uint64
	controlIn      atomic.Uint64
	messagesOut    atomic.Uint64
	framesOut      atomic.Uint64
	writes         atomic.Uint64
	bytesIn        atomic.Uint64
	bytesOut       atomic.Uint64
	busErrors      atomic.Uint64
	protocolErrors atomic.Uint64
	slowClosed     atomic.Uint64
	unknownConn    atomic.Uint64

	mu       sync.Mutex
	rejected map[string]uint64
	closes   map[uint16]uint64
}

func (st *stats) init() {
	st.rejected = make(map[string]uint64)
	st.closes = make(map[uint16]uint64)
}

// reject counts a refused handshake by reason.
func (st *stats) reject(reason string) {
	st.mu.Lock()
	st.rejected[reason]++
	st.mu.Unlock()
}

// closed counts an ended connection by close code.
func (st *stats) closed(code uint16) {
	st.mu.Lock()
	st.closes[code]++
	st.mu.Unlock()
}

// Stats is a snapshot of the shard's counters.
func (s *Shard) Stats() bus.ShardStats {
	st := &s.stats
	out := bus.ShardStats{
		Conns:       int64(s.Conns()),
		Rooms:       int64(s.Rooms()),
		Upgrades:    st.upgrades.Load(),
		FramesIn:    st.messagesIn.Load() + st.controlIn.Load(),
		FramesOut:   st.framesOut.Load(),
		Writes:      st.writes.Load(),
		BytesIn:     st.bytesIn.Load(),
		BytesOut:    st.bytesOut.Load(),
		MessagesIn:  st.messagesIn.Load(),
		MessagesOut: st.messagesOut.Load(),
		BusErrors:   st.busErrors.Load(),
		BusDropped:  s.busDropped(),
		Rejected:    make(map[string]uint64),
		Closes:      make(map[string]uint64),
	}
	st.mu.Lock()
	for k, v := range st.rejected {
		out.Rejected[k] = v
	}
	for k, v := range st.closes {
		out.Closes[strconv.Itoa(int(k))] = v
	}
	st.mu.Unlock()
	return out
}

// busDropped sums the messages NATS dropped because the dispatcher fell
// behind (the inbox was full).
func (s *Shard) busDropped() uint64 {
	var n uint64
	s.subsMu.Lock()
	subs := append([]*nats.Subscription(nil), s.subs...)
	s.subsMu.Unlock()
	for _, sub := range subs {
		if d, err := sub.Dropped(); err == nil {
			n += uint64(d)
		}
	}
	s.roomsMu.RLock()
	for _, r := range s.rooms {
		if d, err := r.sub.Dropped(); err == nil {
			n += uint64(d)
		}
	}
	s.roomsMu.RUnlock()
	return n
}
