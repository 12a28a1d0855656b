package wire

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// DefaultMaxMessage is the message size limit used when Config.MaxMessage is 0.
const DefaultMaxMessage = 1 << 20

// Role says which side of the connection a Reader reads for.
type Role uint8

const (
	// Server reads client frames: they must be masked.
	Server Role = iota
	// Client reads server frames: they must not be masked.
	Client
)

// Config is shared by all readers of a shard; it is passed to Feed by pointer so that no
// connection pays for a copy of it.
type Config struct {
	Role Role
	// MaxMessage is the largest message after reassembly, and after decompression for a
	// compressed one; 0 means DefaultMaxMessage.
	MaxMessage int64
	// Deflate says permessage-deflate (RFC 7692) was negotiated without context takeover:
	// RSV1 on the first frame of a data message marks it compressed, and the Reader
	// decompresses it (to at most MaxMessage bytes, or 1009) and checks its text for UTF-8
	// once decompressed, before delivering it. RSV2 and RSV3 are always refused.
	Deflate bool
}

func (c *Config) maxMessage() int64 {
	if c.MaxMessage > 0 {
		return c.MaxMessage
	}
	return DefaultMaxMessage
}

// Handler receives what a Reader assembles.
type Handler interface {
	// Message is called once per complete data message (OpText or OpBinary, text already
	// validated as UTF-8). p is valid only until Message returns; Message may modify it.
	Message(op ws.OpCode, p []byte) error
	// Control is called for each ping, pong and close frame, after validation (a close payload
	// has a valid code and a UTF-8 reason, or is empty). p is valid only until return.
	Control(op ws.OpCode, p []byte) error
}

// Reader bits in Reader.flags.
const (
	flagInFrame    = 1 << iota // header done, payload bytes pending
	flagFin                    // the current frame is final
	flagMasked                 // the current frame is masked
	flagCompressed             // the message in progress had RSV1 set
	flagClosed                 // a close frame was delivered
	flagStopped                // Feed returned an error
)

// Reader assembles frames and messages from the bytes of one connection, in whatever pieces
// they arrive. The zero value is ready. It is 64 bytes and holds heap memory only while a
// fragmented message, or a frame split across Feed calls, is in progress.
type Reader struct {
	// buf holds the message assembled so far and, after it, the part of a control frame that
	// arrived in an earlier Feed. nil when nothing is held.
	buf     []byte
	remain  int64    // payload bytes of the current frame not yet seen
	hdr     [14]byte // a header split across Feed calls
	hn      uint8    // bytes in hdr
	mask    [4]byte
	mpos    uint8     // mask offset of the next payload byte
	op      ws.OpCode // opcode of the current frame
	msgOp   ws.OpCode // opcode of the message in progress, 0 when none
	ctrlLen uint8     // payload length of the current control frame
	flags   uint8
	text    UTF8 // state of the text message in progress
}

// Buffered returns the number of bytes held between Feed calls; 0 when idle.
func (r *Reader) Buffered() int { return int(r.hn) + len(r.buf) }

// Closed reports whether a close frame has been delivered.
func (r *Reader) Closed() bool { return r.flags&flagClosed != 0 }

// Reset drops held memory and all state, making r ready for a new connection.
func (r *Reader) Reset() { *r = Reader{} }

// Feed consumes all of p, unmasking it in place, and calls h for each message and control frame
// completed by these bytes. What is incomplete is kept: a partial header in a fixed array, a
// partial message in a slice that grows only as bytes arrive, never by a peer-declared length.
//
// A non-nil error from h stops Feed and is returned as is. A protocol violation returns
// *CloseError. After either, Feed returns ErrStopped until Reset. After a close frame has been
// delivered, Feed ignores all further input.
func (r *Reader) Feed(cfg *Config, p []byte, h Handler) error {
	if r.flags&(flagStopped|flagClosed) != 0 {
		if r.flags&flagStopped != 0 {
			return ErrStopped
		}
		return nil
	}
	for {
		if r.flags&flagInFrame == 0 {
			if len(p) == 0 {
				return nil
			}
			n, err := r.header(cfg, p)
			p = p[n:]
			if err != nil {
				return r.stop(err)
			}
			continue
		}
		if len(p) == 0 && r.remain > 0 {
			return nil
		}
		var err error
		if r.op.IsControl() {
			p, err = r.control(p, h)
		} else {
			p, err = r.data(cfg, p, h)
		}
		if err != nil {
			return r.stop(err)
		}
		if r.flags&flagClosed != 0 {
			return nil
		}
	}
}

// stop puts r out of service after an error and releases what it holds.
func (r *Reader) stop(err error) error {
	r.flags |= flagStopped
	r.buf = nil
	r.hn = 0
	return err
}

// header consumes header bytes from p and starts the frame once the header is complete. It
// returns how many bytes it consumed.
func (r *Reader) header(cfg *Config, p []byte) (int, error) {
	if r.hn == 0 && len(p) >= 2 {
		// Common case: the header starts at a read boundary or inside the read.
		if err := r.checkFirst(cfg, p[0], p[1]); err != nil {
			return 0, err
		}
		need := headerSize(p[1])
		if len(p) >= need {
			return need, r.start(cfg, p[:need])
		}
		r.hn = uint8(copy(r.hdr[:], p))
		return len(p), nil
	}
	n := 0
	if r.hn < 2 {
		k := copy(r.hdr[r.hn:2], p)
		r.hn += uint8(k)
		n += k
		if r.hn < 2 {
			return n, nil
		}
		if err := r.checkFirst(cfg, r.hdr[0], r.hdr[1]); err != nil {
			return n, err
		}
	}
	need := headerSize(r.hdr[1])
	k := copy(r.hdr[r.hn:need], p[n:])
	r.hn += uint8(k)
	n += k
	if int(r.hn) < need {
		return n, nil
	}
	r.hn = 0
	return n, r.start(cfg, r.hdr[:need])
}

// headerSize is the header length announced by its second byte.
func headerSize(b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// checkFirst validates what the first two header bytes alone decide.
func (r *Reader) checkFirst(cfg *Config, b0, b1 byte) error {
	op := ws.OpCode(b0 & 0x0F)
	fin := b0&0x80 != 0
	masked := b1&0x80 != 0
	len7 := b1 & 0x7F
	if op.IsReserved() {
		return protocolError(reasonOpcode)
	}
	if rsv := b0 & 0x70; rsv != 0 {
		if rsv != 0x40 || !cfg.Deflate || op.IsControl() || op == ws.OpContinuation {
			return protocolError(reasonRsv)
		}
	}
	if cfg.Role == Server && !masked {
		return protocolError(reasonUnmasked)
	}
	if cfg.Role == Client && masked {
		return protocolError(reasonMasked)
	}
	if op.IsControl() {
		if !fin {
			return protocolError(reasonCtrlFragment)
		}
		if len7 > maxControlPayload {
			return protocolError(reasonCtrlLength)
		}
		if op == ws.OpClose && len7 == 1 {
			return protocolError(reasonCloseLength)
		}
		return nil
	}
	if op == ws.OpContinuation {
		if r.msgOp == 0 {
			return protocolError(reasonContinuation)
		}
	} else if r.msgOp != 0 {
		return protocolError(reasonInterleaved)
	}
	return nil
}

// start sets up the frame described by the complete header h, already checked by checkFirst.
func (r *Reader) start(cfg *Config, h []byte) error {
	op := ws.OpCode(h[0] & 0x0F)
	var n int64
	rest := h[2:]
	switch len7 := h[1] & 0x7F; len7 {
	case 126:
		n = int64(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	case 127:
		u := binary.BigEndian.Uint64(rest)
		if u>>63 != 0 {
			return protocolError(reasonLength64)
		}
		n = int64(u)
		rest = rest[8:]
	default:
		n = int64(len7)
	}
	flags := r.flags &^ (flagFin | flagMasked)
	if h[0]&0x80 != 0 {
		flags |= flagFin
	}
	if h[1]&0x80 != 0 {
		flags |= flagMasked
		copy(r.mask[:], rest)
	}
	if op.IsControl() {
		r.ctrlLen = uint8(n)
	} else {
		// The limit is checked against the declared length before any byte is stored for it.
		if n > cfg.maxMessage()-int64(len(r.buf)) {
			return &CloseError{Code: ws.StatusMessageTooBig, Reason: reasonTooBig}
		}
		if op != ws.OpContinuation {
			r.msgOp = op
			r.text.Reset()
			flags &^= flagCompressed
			if h[0]&0x40 != 0 {
				flags |= flagCompressed
			}
		}
	}
	r.op = op
	r.remain = n
	r.mpos = 0
	r.flags = flags | flagInFrame
	return nil
}

// take consumes up to r.remain bytes of p, unmasking them in place.
func (r *Reader) take(p []byte) (chunk, rest []byte) {
	n := len(p)
	if int64(n) > r.remain {
		n = int(r.remain)
	}
	chunk = p[:n]
	if r.flags&flagMasked != 0 && n > 0 {
		ws.Cipher(chunk, r.mask, int(r.mpos))
		r.mpos = uint8((int(r.mpos) + n) & 3)
	}
	r.remain -= int64(n)
	return chunk, p[n:]
}

// data handles payload bytes of a data frame.
func (r *Reader) data(cfg *Config, p []byte, h Handler) ([]byte, error) {
	chunk, p := r.take(p)
	isText := r.msgOp == ws.OpText && r.flags&flagCompressed == 0
	if isText && !r.text.Write(chunk) {
		return p, &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: reasonText}
	}
	final := r.remain == 0 && r.flags&flagFin != 0
	if final && r.buf == nil {
		// Fast path: the message is this frame's bytes, all inside p; hand them over in place.
		r.flags &^= flagInFrame
		return p, r.deliver(cfg, h, chunk, isText)
	}
	if len(chunk) > 0 {
		r.hold(chunk)
	}
	if r.remain > 0 {
		return p, nil
	}
	r.flags &^= flagInFrame
	if !final {
		return p, nil
	}
	msg := r.buf
	r.buf = nil
	return p, r.deliver(cfg, h, msg, isText)
}

// hold appends chunk to the held message. The first allocation leaves room for as many bytes
// again, so that a message arriving in similar pieces is assembled with one or two
// allocations; it is sized by bytes that arrived, capped by what the final frame declared.
func (r *Reader) hold(chunk []byte) {
	if r.buf == nil {
		n := 2 * int64(len(chunk))
		if r.flags&flagFin != 0 && n > int64(len(chunk))+r.remain {
			n = int64(len(chunk)) + r.remain
		}
		r.buf = make([]byte, 0, n)
	}
	r.buf = append(r.buf, chunk...)
}

// deliver ends the message in progress and passes it to h, decompressed if
// it came compressed.
func (r *Reader) deliver(cfg *Config, h Handler, msg []byte, isText bool) error {
	if isText && !r.text.Complete() {
		return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: reasonText}
	}
	op := r.msgOp
	r.msgOp = 0
	if r.flags&flagCompressed != 0 {
		r.flags &^= flagCompressed
		return deliverInflated(cfg, h, op, msg)
	}
	return h.Message(op, msg)
}

// deliverInflated decompresses a message into a pooled buffer for the
// length of h.Message.
func deliverInflated(cfg *Config, h Handler, op ws.OpCode, msg []byte) error {
	bp, err := inflate(msg, cfg.maxMessage())
	if err != nil {
		return err
	}
	defer releaseInflated(bp)
	if op == ws.OpText && !utf8.Valid(*bp) {
		return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: reasonText}
	}
	return h.Message(op, *bp)
}

// control handles payload bytes of a control frame. A control frame that arrives whole is
// delivered from p; otherwise its bytes are parked after the message in buf.
func (r *Reader) control(p []byte, h Handler) ([]byte, error) {
	whole := r.remain == int64(r.ctrlLen)
	chunk, p := r.take(p)
	var payload []byte
	if whole && r.remain == 0 {
		payload = chunk
	} else {
		r.buf = append(r.buf, chunk...)
		if r.remain > 0 {
			return p, nil
		}
		start := len(r.buf) - int(r.ctrlLen)
		payload = r.buf[start:]
		if start == 0 {
			r.buf = nil
		} else {
			r.buf = r.buf[:start]
		}
	}
	r.flags &^= flagInFrame
	if r.op == ws.OpClose {
		if err := checkClose(payload); err != nil {
			return p, err
		}
		r.flags |= flagClosed
		r.buf = nil
	}
	return p, h.Control(r.op, payload)
}

// checkClose validates a received close payload whose length is not 1.
func checkClose(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	code, reason := ParseClose(p)
	if !ValidCloseCode(code) {
		return protocolError(reasonCloseCode)
	}
	var v UTF8
	if !v.Write(reason) || !v.Complete() {
		return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: reasonCloseReason}
	}
	return nil
}
