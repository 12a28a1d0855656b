// Package bench is shoal bench: an open-loop load generator for WebSocket
// servers that speak the bench protocol (/ws/echo and /ws/fanout) or
// Centrifugo's client protocol, and for shoal's bundled chat (/ws/chat),
// built on the epoll client of bench/client. A Codec per protocol turns
// the scenarios' joins and publishes into frames and the server's frames
// into events.
//
// A run is one Scenario (connect, echo, fanout, chat; see Scenarios)
// executed by one process or split over child processes (--procs) whose
// results the parent merges into one Report. Latencies go into HDR
// histograms and are measured from the time a message was due, not sent,
// so that a stalled server cannot hide its stall by slowing the load
// down. The tool checks itself: when its own CPU saturates or its sends
// fall behind schedule the report says so.
package bench
