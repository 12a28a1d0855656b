package wire

import (
	"errors"
	"strconv"

	"github.com/gobwas/ws"
)

// ErrStopped is returned by Feed once an earlier call failed: the stream position is lost, so
// the Reader refuses further input until Reset.
var ErrStopped = errors.New("wire: reader stopped by an earlier error")

// CloseError is a protocol outcome: the connection must be closed with Code. Reason is short
// enough to be sent in a close frame.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

// Error implements error.
func (e *CloseError) Error() string {
	return "wire: close " + strconv.Itoa(int(e.Code)) + ": " + e.Reason
}

// Reasons of the protocol violations Feed detects. They travel to the peer in a close frame.
const (
	reasonUnmasked     = "unmasked client frame"
	reasonMasked       = "masked server frame"
	reasonOpcode       = "reserved opcode"
	reasonRsv          = "reserved bits set"
	reasonCtrlFragment = "fragmented control frame"
	reasonCtrlLength   = "control frame too long"
	reasonContinuation = "continuation without a message"
	reasonInterleaved  = "new message inside a fragmented message"
	reasonLength64     = "invalid 64-bit length"
	reasonTooBig       = "message too big"
	reasonText         = "invalid UTF-8 text"
	reasonCloseLength  = "close payload of one byte"
	reasonCloseCode    = "invalid close code"
	reasonCloseReason  = "invalid UTF-8 close reason"
)

func protocolError(reason string) *CloseError {
	return &CloseError{Code: ws.StatusProtocolError, Reason: reason}
}
