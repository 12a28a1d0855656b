package shard

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// closeReason is why the shard closed a connection on its own.
type closeReason uint8

const (
	closeSlow     closeReason = iota // outbound queue full, close policy: 1008
	closeFlood                       // kept sending past its rate limit: 1008
	closeIdle                        // silent past the idle timeout: 1001
	closeTooBig                      // message over MaxMessage: 1009
	closeProtocol                    // RFC 6455 violation: 1002
	closeUTF8                        // text that is not UTF-8: 1007
	closeBus                         // the bus refused its message: 1013
	numCloseReasons
)

// closeReasonNames are the reasons as ShardStats.ServerCloses names them.
var closeReasonNames = [numCloseReasons]string{"slow_consumer", "flood", "idle", "too_big", "protocol", "invalid_utf8", "bus_down"}

// dropReason is why the shard dropped messages of a connection.
type dropReason uint8

const (
	dropRateLimit dropReason = iota // from the client, past its rate
	dropQueueFull                   // to the client, its queue full (drop-oldest)
	numDropReasons
)

// dropReasonNames are the reasons as the bus (Shoal-Drop-Reason) and
// ShardStats.Dropped name them.
var dropReasonNames = [numDropReasons]string{bus.DropRateLimit, bus.DropQueueFull}

// stats are the shard's counters, reported in its life records and from
// there in the supervisor's /metrics.
type stats struct {
	upgrades     atomic.Uint64
	messagesIn   atomic.Uint64
	controlIn    atomic.Uint64
	messagesOut  atomic.Uint64
	framesOut    atomic.Uint64
	writes       atomic.Uint64
	bytesIn      atomic.Uint64
	bytesOut     atomic.Uint64
	busErrors    atomic.Uint64
	unknownConn  atomic.Uint64
	readStalls   atomic.Uint64
	serverCloses [numCloseReasons]atomic.Uint64
	dropped      [numDropReasons]atomic.Uint64

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
		ReadStalls:  st.readStalls.Load(),
		Rejected:    make(map[string]uint64),
		Closes:      make(map[string]uint64),
	}
	for r := range st.serverCloses {
		if n := st.serverCloses[r].Load(); n > 0 {
			if out.ServerCloses == nil {
				out.ServerCloses = make(map[string]uint64)
			}
			out.ServerCloses[closeReasonNames[r]] = n
		}
	}
	for r := range st.dropped {
		if n := st.dropped[r].Load(); n > 0 {
			if out.Dropped == nil {
				out.Dropped = make(map[string]uint64)
			}
			out.Dropped[dropReasonNames[r]] = n
		}
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
