// Package benchproto holds the parts of the bench protocol that every peer
// server shares: the room join handshake and common limits.
package benchproto

import (
	"errors"
	"strings"
)

const (
	// EchoPath is the endpoint that sends every data message back to its sender.
	EchoPath = "/ws/echo"
	// FanoutPath is the endpoint whose connections join one room and publish to it.
	FanoutPath = "/ws/fanout"
	// DefaultAddr is the listen address used when -addr is not given.
	DefaultAddr = "127.0.0.1:9001"
	// ReadLimit bounds the size of one incoming message.
	ReadLimit = 1 << 20
	// ClosePolicyViolation is the close code sent for a bad first fanout message.
	ClosePolicyViolation = 1008
	// CloseGoingAway is the close code sent to connections when the server stops.
	CloseGoingAway = 1001
	// maxRoomLen is the longest room name the protocol allows.
	maxRoomLen = 64
)

// Sentinel errors returned by ParseJoin; their text is used as the close reason.
var (
	// ErrNotText means the first fanout message was binary.
	ErrNotText = errors.New("benchproto: first message must be text")
	// ErrNotJoin means the first fanout message did not start with "join ".
	ErrNotJoin = errors.New("benchproto: first message must be join <room>")
	// ErrBadRoom means the room name is empty, too long or has a forbidden byte.
	ErrBadRoom = errors.New("benchproto: bad room name")
)

// ParseJoin validates the first message of a fanout connection and returns
// the room it names. isText reports whether the message was a text message.
func ParseJoin(isText bool, msg []byte) (string, error) {
	if !isText {
		return "", ErrNotText
	}
	room, ok := strings.CutPrefix(string(msg), "join ")
	if !ok {
		return "", ErrNotJoin
	}
	if len(room) == 0 || len(room) > maxRoomLen {
		return "", ErrBadRoom
	}
	for i := 0; i < len(room); i++ {
		if !roomByte(room[i]) {
			return "", ErrBadRoom
		}
	}
	return room, nil
}

// Joined returns the reply that confirms membership of room.
func Joined(room string) []byte {
	return []byte("joined " + room)
}

func roomByte(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	case b == '_' || b == '.' || b == '-':
		return true
	}
	return false
}
