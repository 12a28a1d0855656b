package wire

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// permessage-deflate (RFC 7692) as shoal negotiates it: without context
// takeover in either direction, so every message is compressed and
// decompressed on its own, with a compressor or decompressor borrowed from
// a pool for the length of one message. An idle connection holds neither.

// DeflateLevel is the compression level of outgoing messages: the fastest,
// since the gateway's few cores compress for every connection.
const DeflateLevel = flate.BestSpeed

// MinDeflate is the smallest payload worth compressing; shorter ones go
// out plain (RFC 7692 lets any message be sent uncompressed).
const MinDeflate = 64

// DeflateWindowBits is log2 of the compressor's window (32 KiB). A peer
// that decompresses with a narrower window (a smaller
// server_max_window_bits) can take a compressed message only if it is no
// longer than its window.
const DeflateWindowBits = 15

// Reasons of the failures of compressed input.
const (
	reasonInflateTooBig = "message too big once decompressed"
	reasonInflate       = "invalid compressed data"
)

// inflater is a pooled decompressor with its input reader.
type inflater struct {
	src bytes.Reader
	r   *wsflate.Reader
}

// flateReader adapts compress/flate's Reset to wsflate's, so that a
// pooled decompressor is reset instead of replaced.
type flateReader struct{ io.ReadCloser }

func (f flateReader) Reset(r io.Reader) { _ = f.ReadCloser.(flate.Resetter).Reset(r, nil) }

var inflaters = sync.Pool{New: func() any {
	in := &inflater{}
	in.r = wsflate.NewReader(&in.src, func(r io.Reader) wsflate.Decompressor {
		return flateReader{flate.NewReader(r)}
	})
	return in
}}

// inflated holds the buffers decompressed messages are delivered in.
var inflated sync.Pool // *[]byte

// inflate decompresses a permessage-deflate message into a pooled buffer,
// refusing to produce more than limit bytes: a small message that
// expands without bound (a compression bomb) costs at most limit bytes and
// the work to produce them. The caller gives the buffer back with
// releaseInflated.
func inflate(p []byte, limit int64) (*[]byte, error) {
	in := inflaters.Get().(*inflater)
	defer inflaters.Put(in)
	in.src.Reset(p)
	in.r.Reset(&in.src)
	bp, _ := inflated.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	out := *bp
	if cap(out) == 0 {
		out = make([]byte, 0, min(max(4*int64(len(p)), 512), limit+1))
	}
	var err error
	for err == nil {
		if len(out) == cap(out) {
			if int64(len(out)) > limit {
				break
			}
			// Grow by doubling, up to one byte past the limit: that byte
			// is how a message over the limit is told apart.
			grown := make([]byte, len(out), min(2*int64(cap(out)), limit+1))
			copy(grown, out)
			out = grown
		}
		var n int
		n, err = in.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
	}
	*bp = out
	switch {
	case int64(len(out)) > limit:
		releaseInflated(bp)
		return nil, &CloseError{Code: ws.StatusMessageTooBig, Reason: reasonInflateTooBig}
	case !errors.Is(err, io.EOF):
		releaseInflated(bp)
		return nil, &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: reasonInflate}
	}
	return bp, nil
}

func releaseInflated(bp *[]byte) {
	*bp = (*bp)[:0]
	inflated.Put(bp)
}

// deflater is a pooled compressor writing into a scratch buffer.
type deflater struct {
	w   *wsflate.Writer
	out sink
}

// sink is an io.Writer appending to a reused slice.
type sink struct{ b []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

var deflaters = sync.Pool{New: func() any {
	d := &deflater{}
	d.w = wsflate.NewWriter(&d.out, func(w io.Writer) wsflate.Compressor {
		fw, _ := flate.NewWriter(w, DeflateLevel)
		return fw
	})
	return d
}}

// compress deflates p as one message; the result is valid until the
// deflater's next use.
func (d *deflater) compress(p []byte) ([]byte, error) {
	d.out.b = d.out.b[:0]
	d.w.Reset(&d.out)
	if _, err := d.w.Write(p); err != nil {
		return nil, err
	}
	// Flush ends the message with a sync flush, whose four-byte tail
	// (00 00 ff ff) the writer leaves out, as RFC 7692 7.2.1 asks.
	if err := d.w.Flush(); err != nil {
		return nil, err
	}
	return d.out.b, nil
}

// AppendDeflatedFrame appends one unmasked frame carrying p compressed
// with permessage-deflate (RSV1 set), as a server sends it. It reports
// false, and appends nothing, when compression would not make the frame
// smaller; the plain frame is then the one to send.
//
// With no context takeover the compressed form of p depends on p alone, so
// one compressed frame serves every connection that negotiated the
// extension with a window of DeflateWindowBits, or of at least len(p)
// bytes (back-references never reach outside the message).
func AppendDeflatedFrame(dst []byte, op ws.OpCode, p []byte) ([]byte, bool) {
	d := deflaters.Get().(*deflater)
	defer deflaters.Put(d)
	z, err := d.compress(p)
	if err != nil || len(z) >= len(p) {
		return dst, false
	}
	dst = grow(dst, HeaderLen(len(z), false)+len(z))
	dst = appendHeader(dst, op|opRsv1, true, false, len(z))
	return append(dst, z...), true
}

// AppendMaskedDeflatedFrame is AppendDeflatedFrame for a client: the frame
// is masked with key, and p is compressed even when that does not pay.
func AppendMaskedDeflatedFrame(dst []byte, op ws.OpCode, key [4]byte, p []byte) []byte {
	d := deflaters.Get().(*deflater)
	defer deflaters.Put(d)
	z, _ := d.compress(p)
	dst = grow(dst, HeaderLen(len(z), true)+len(z))
	dst = appendHeader(dst, op|opRsv1, true, true, len(z))
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, z...)
	ws.Cipher(dst[start:], key, 0)
	return dst
}

// opRsv1 travels in the opcode argument of appendHeader to set RSV1, the
// bit that marks a compressed message.
const opRsv1 ws.OpCode = 0x40
