package bus

import "time"

// Life record states.
const (
	LifeUp        = "up"
	LifeHeartbeat = "heartbeat"
	LifeDown      = "down"
)

// MissedBeats is how many heartbeat intervals may pass without a record
// before a shard is considered gone.
const MissedBeats = 3

// Life is the JSON record a shard publishes on Subjects.Life: "up" at start,
// "heartbeat" every interval, "down" when it drains.
type Life struct {
	Shard      string    `json:"shard"`
	PID        int       `json:"pid"`
	State      string    `json:"state"`
	Time       time.Time `json:"time"`
	IntervalMS int64     `json:"interval_ms"`
	Addr       string    `json:"addr,omitempty"`
	// Compact says the shard takes send commands in the compact form
	// (compact.go). A shard publishes compact message events for a service
	// only once that service sent it a compact send, so each side uses the
	// form only with a peer known to read it, and releases before the form
	// share a fleet with later ones.
	Compact bool       `json:"compact,omitempty"`
	Stats   ShardStats `json:"stats"`
}

// ShardStats are a shard's counters since it started. Counters only grow;
// Conns and Rooms are current values.
type ShardStats struct {
	Conns     int64             `json:"conns"`
	Rooms     int64             `json:"rooms"`
	Upgrades  uint64            `json:"upgrades"`
	Rejected  map[string]uint64 `json:"rejected,omitempty"` // handshake rejections by reason
	FramesIn  uint64            `json:"frames_in"`
	FramesOut uint64            `json:"frames_out"`
	// Writes counts write syscalls on client sockets: FramesOut over
	// Writes is how many frames a syscall carried on average.
	Writes      uint64            `json:"writes"`
	BytesIn     uint64            `json:"bytes_in"`
	BytesOut    uint64            `json:"bytes_out"`
	MessagesIn  uint64            `json:"messages_in"`
	MessagesOut uint64            `json:"messages_out"`
	Closes      map[string]uint64 `json:"closes,omitempty"` // by close code, as a decimal string
	// ServerCloses counts the connections the shard closed on its own, by
	// reason: slow_consumer (outbound queue full, 1008), flood (kept
	// sending past its rate limit, 1008), idle (no answer within the idle
	// timeout, 1001), too_big (1009), protocol (1002), invalid_utf8 (1007),
	// bus_down (the bus refused a message, 1013).
	ServerCloses map[string]uint64 `json:"server_closes,omitempty"`
	// Dropped counts messages dropped, by reason: rate_limit (from clients
	// sending past their rate limit) and queue_full (to slow clients of a
	// drop-oldest service). The services heard of each in dropped events.
	Dropped    map[string]uint64 `json:"dropped,omitempty"`
	BusErrors  uint64            `json:"bus_errors"`
	BusDropped uint64            `json:"bus_dropped"`
	// ReadStalls counts the times the read path waited for the worker's
	// dispatcher to catch up (see the shard's inboxHigh).
	ReadStalls uint64 `json:"read_stalls"`
}
