package wire

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"
)

var testKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// event is one thing a Reader handed to its Handler.
type event struct {
	control bool
	op      ws.OpCode
	payload string
}

func (e event) String() string {
	kind := "msg"
	if e.control {
		kind = "ctl"
	}
	return fmt.Sprintf("%s(%d,%q)", kind, e.op, e.payload)
}

// recorder is a Handler that keeps copies of what it receives.
type recorder struct {
	events []event
	fail   error
}

func (r *recorder) Message(op ws.OpCode, p []byte) error {
	r.events = append(r.events, event{op: op, payload: string(p)})
	return r.fail
}

func (r *recorder) Control(op ws.OpCode, p []byte) error {
	r.events = append(r.events, event{control: true, op: op, payload: string(p)})
	return r.fail
}

// outcome is everything observable after feeding an input.
type outcome struct {
	events   []event
	code     ws.StatusCode // 0: no protocol error
	buffered int           // only meaningful without an error
	closed   bool
}

func (o outcome) String() string {
	return fmt.Sprintf("events=%v code=%d buffered=%d closed=%v", o.events, o.code, o.buffered, o.closed)
}

func (o outcome) equal(p outcome) bool {
	return slices.Equal(o.events, p.events) && o.code == p.code && o.buffered == p.buffered && o.closed == p.closed
}

// feedChunks feeds copies of chunks (Feed unmasks in place) until the first error.
func feedChunks(tb testing.TB, cfg *Config, chunks ...[]byte) outcome {
	tb.Helper()
	var r Reader
	var rec recorder
	var o outcome
	for _, c := range chunks {
		err := r.Feed(cfg, bytes.Clone(c), &rec)
		if err != nil {
			var ce *CloseError
			if !errors.As(err, &ce) {
				tb.Fatalf("Feed: unexpected error %v", err)
			}
			o.code = ce.Code
			if r.buf != nil || r.Buffered() != 0 {
				tb.Fatalf("Reader holds %d bytes after an error", r.Buffered())
			}
			break
		}
	}
	o.events = rec.events
	if o.code == 0 {
		o.buffered = r.Buffered()
	}
	o.closed = r.Closed()
	if o.buffered == 0 && r.buf != nil {
		tb.Fatalf("Buffered() == 0 but the held slice is not nil (cap %d)", cap(r.buf))
	}
	return o
}

func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// Frame builders for the case table.
func mf(op ws.OpCode, fin bool, p string) []byte {
	return AppendMaskedFrame(nil, op, fin, testKey, []byte(p))
}
func uf(op ws.OpCode, fin bool, p string) []byte { return AppendFrame(nil, op, fin, []byte(p)) }
func cat(parts ...[]byte) []byte                 { return bytes.Join(parts, nil) }
func msg(op ws.OpCode, p string) event           { return event{op: op, payload: p} }
func ctl(op ws.OpCode, p string) event           { return event{control: true, op: op, payload: p} }

// closePayload builds a raw close payload, valid or not.
func closePayload(code uint16, reason string) string {
	return string([]byte{byte(code >> 8), byte(code)}) + reason
}

// deflated is p compressed as permessage-deflate sends it, tail removed.
func deflated(p string) string {
	d := deflaters.Get().(*deflater)
	defer deflaters.Put(d)
	z, err := d.compress([]byte(p))
	if err != nil {
		panic(err)
	}
	return string(z)
}

// rsv1 sets the compressed bit of a frame.
func rsv1(f []byte) []byte {
	f[0] |= 0x40
	return f
}

// rawMasked builds a masked frame from a raw first byte, for reserved opcodes and bits.
func rawMasked(b0 byte, p string) []byte {
	f := mf(ws.OpBinary, true, p)
	f[0] = b0
	return f
}

var (
	serverCfg    = &Config{Role: Server}
	clientCfg    = &Config{Role: Client}
	deflateCfg   = &Config{Role: Server, Deflate: true}
	deflate4KCfg = &Config{Role: Server, Deflate: true, MaxMessage: 4096}
	small16Cfg   = &Config{Role: Server, MaxMessage: 16}
	bigPayload   = strings.Repeat("0123456789abcdef", 20) // 320 bytes: 16-bit length
	mixedPayload = strings.Repeat("héllo wörld — ☃ 𝄞 ", 8)
)

type frameCase struct {
	name   string
	cfg    *Config
	in     []byte
	want   []event
	code   ws.StatusCode
	closed bool
}

// frameCases is shared by TestReaderCases, the split property and BenchmarkFeed_Cases.
func frameCases() []frameCase {
	return []frameCase{
		{name: "text", cfg: serverCfg, in: mf(ws.OpText, true, "hello"), want: []event{msg(ws.OpText, "hello")}},
		{name: "binary16", cfg: serverCfg, in: mf(ws.OpBinary, true, bigPayload), want: []event{msg(ws.OpBinary, bigPayload)}},
		{name: "mixedText", cfg: serverCfg, in: mf(ws.OpText, true, mixedPayload), want: []event{msg(ws.OpText, mixedPayload)}},
		{name: "emptyText", cfg: serverCfg, in: mf(ws.OpText, true, ""), want: []event{msg(ws.OpText, "")}},
		{name: "twoMessages", cfg: serverCfg, in: cat(mf(ws.OpText, true, "a"), mf(ws.OpBinary, true, "bc")),
			want: []event{msg(ws.OpText, "a"), msg(ws.OpBinary, "bc")}},
		{name: "nonMinimal64", cfg: serverCfg,
			in:   cat([]byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 3}, testKey[:], maskedBytes("xyz")),
			want: []event{msg(ws.OpBinary, "xyz")}},
		{name: "nonMinimal16", cfg: serverCfg,
			in:   cat([]byte{0x81, 0x80 | 126, 0, 2}, testKey[:], maskedBytes("ok")),
			want: []event{msg(ws.OpText, "ok")}},
		{name: "fragmentedWithPing", cfg: serverCfg,
			in: cat(mf(ws.OpText, false, "Hel"), mf(ws.OpPing, true, "p"), mf(ws.OpContinuation, false, "lo "),
				mf(ws.OpContinuation, false, ""), mf(ws.OpContinuation, true, "wörld")),
			want: []event{ctl(ws.OpPing, "p"), msg(ws.OpText, "Hello wörld")}},
		{name: "fragmentedEmpty", cfg: serverCfg,
			in:   cat(mf(ws.OpBinary, false, ""), mf(ws.OpContinuation, true, "")),
			want: []event{msg(ws.OpBinary, "")}},
		{name: "fragmentedSplitRune", cfg: serverCfg,
			in:   cat(mf(ws.OpText, false, "\xf0\x9d"), mf(ws.OpContinuation, true, "\x84\x9e")),
			want: []event{msg(ws.OpText, "𝄞")}},
		{name: "pingPong", cfg: serverCfg, in: cat(mf(ws.OpPing, true, ""), mf(ws.OpPong, true, strings.Repeat("x", 125))),
			want: []event{ctl(ws.OpPing, ""), ctl(ws.OpPong, strings.Repeat("x", 125))}},
		{name: "close", cfg: serverCfg,
			in:     cat(mf(ws.OpClose, true, closePayload(1000, "bye")), mf(ws.OpText, true, "ignored"), []byte{0xff}),
			want:   []event{ctl(ws.OpClose, closePayload(1000, "bye"))},
			closed: true},
		{name: "closeEmpty", cfg: serverCfg, in: mf(ws.OpClose, true, ""), want: []event{ctl(ws.OpClose, "")}, closed: true},
		{name: "closePrivate", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(4999, "")),
			want: []event{ctl(ws.OpClose, closePayload(4999, ""))}, closed: true},
		{name: "closeMidMessage", cfg: serverCfg,
			in:     cat(mf(ws.OpText, false, "par"), mf(ws.OpClose, true, closePayload(1001, "")), mf(ws.OpContinuation, true, "t")),
			want:   []event{ctl(ws.OpClose, closePayload(1001, ""))},
			closed: true},
		{name: "client", cfg: clientCfg, in: cat(uf(ws.OpText, true, "hi"), uf(ws.OpPing, true, "x")),
			want: []event{msg(ws.OpText, "hi"), ctl(ws.OpPing, "x")}},
		{name: "deflated", cfg: deflateCfg, in: AppendMaskedDeflatedFrame(nil, ws.OpText, testKey, []byte(mixedPayload)),
			want: []event{msg(ws.OpText, mixedPayload)}},
		{name: "deflatedFragments", cfg: deflateCfg,
			in: cat(rsv1(mf(ws.OpBinary, false, deflated(bigPayload)[:7])), mf(ws.OpPing, true, "p"),
				mf(ws.OpContinuation, true, deflated(bigPayload)[7:])),
			want: []event{ctl(ws.OpPing, "p"), msg(ws.OpBinary, bigPayload)}},
		{name: "plainOnDeflate", cfg: deflateCfg, in: cat(mf(ws.OpText, true, "plain"), AppendMaskedDeflatedFrame(nil, ws.OpBinary, testKey, nil)),
			want: []event{msg(ws.OpText, "plain"), msg(ws.OpBinary, "")}},
		{name: "deflatedExactLimit", cfg: deflate4KCfg, in: AppendMaskedDeflatedFrame(nil, ws.OpBinary, testKey, make([]byte, 4096)),
			want: []event{msg(ws.OpBinary, string(make([]byte, 4096)))}},
		{name: "maxMessageExact", cfg: small16Cfg,
			in:   cat(mf(ws.OpBinary, false, "01234567"), mf(ws.OpContinuation, true, "89abcdef")),
			want: []event{msg(ws.OpBinary, "0123456789abcdef")}},
		{name: "truncatedHeader", cfg: serverCfg, in: mf(ws.OpText, true, bigPayload)[:3]},
		{name: "truncatedPayload", cfg: serverCfg, in: mf(ws.OpText, true, "hello")[:9]},
		{name: "truncatedFragment", cfg: serverCfg, in: cat(mf(ws.OpText, false, "abc"), mf(ws.OpContinuation, true, "def")[:7])},

		// Protocol violations.
		{name: "unmaskedToServer", cfg: serverCfg, in: uf(ws.OpText, true, "hi"), code: 1002},
		{name: "maskedToClient", cfg: clientCfg, in: mf(ws.OpText, true, "hi"), code: 1002},
		{name: "reservedOpcode3", cfg: serverCfg, in: rawMasked(0x83, "x"), code: 1002},
		{name: "reservedOpcode7", cfg: serverCfg, in: rawMasked(0x87, "x"), code: 1002},
		{name: "reservedOpcodeB", cfg: serverCfg, in: rawMasked(0x8B, "x"), code: 1002},
		{name: "reservedOpcodeF", cfg: serverCfg, in: rawMasked(0x8F, "x"), code: 1002},
		{name: "rsv1", cfg: serverCfg, in: rawMasked(0xC2, "x"), code: 1002},
		{name: "rsv2", cfg: deflateCfg, in: rawMasked(0xA2, "x"), code: 1002},
		{name: "rsv3", cfg: deflateCfg, in: rawMasked(0x92, "x"), code: 1002},
		{name: "rsv1OnPing", cfg: deflateCfg, in: rawMasked(0xC9, "x"), code: 1002},
		// A compression bomb: 1.3 KiB on the wire would be 1 MiB once decompressed.
		{name: "deflateBomb", cfg: deflate4KCfg, in: AppendMaskedDeflatedFrame(nil, ws.OpBinary, testKey, make([]byte, 1<<20)), code: 1009},
		{name: "deflatedOneOverLimit", cfg: deflate4KCfg, in: AppendMaskedDeflatedFrame(nil, ws.OpBinary, testKey, make([]byte, 4097)), code: 1009},
		{name: "deflateCorrupt", cfg: deflateCfg, in: rawMasked(0xC2, "\xff\xff\xff"), code: 1007},
		{name: "deflatedInvalidText", cfg: deflateCfg, in: AppendMaskedDeflatedFrame(nil, ws.OpText, testKey, []byte("ok \xed\xa0\x80")), code: 1007},
		{name: "rsv1OnContinuation", cfg: deflateCfg,
			in: cat(mf(ws.OpBinary, false, "a"), rawMasked(0xC0, "b")), code: 1002},
		{name: "fragmentedPing", cfg: serverCfg, in: mf(ws.OpPing, false, "x"), code: 1002},
		{name: "longPing", cfg: serverCfg, in: mf(ws.OpPing, true, strings.Repeat("x", 126)), code: 1002},
		{name: "longClose", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1000, strings.Repeat("x", 124))), code: 1002},
		{name: "continuationAlone", cfg: serverCfg, in: mf(ws.OpContinuation, true, "x"), code: 1002},
		{name: "continuationAfterMessage", cfg: serverCfg,
			in: cat(mf(ws.OpText, true, "a"), mf(ws.OpContinuation, true, "b")), want: []event{msg(ws.OpText, "a")}, code: 1002},
		{name: "interleavedText", cfg: serverCfg,
			in: cat(mf(ws.OpText, false, "a"), mf(ws.OpText, true, "b")), code: 1002},
		{name: "interleavedBinary", cfg: serverCfg,
			in:   cat(mf(ws.OpBinary, false, "a"), mf(ws.OpPing, true, ""), mf(ws.OpBinary, true, "b")),
			want: []event{ctl(ws.OpPing, "")}, code: 1002},
		{name: "length64MSB", cfg: serverCfg,
			in: cat([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1}, testKey[:]), code: 1002},
		{name: "tooBigDeclared", cfg: serverCfg,
			in: cat([]byte{0x82, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0}, testKey[:], []byte("abc")), code: 1009},
		{name: "tooBig", cfg: small16Cfg, in: mf(ws.OpBinary, true, "0123456789abcdefg"), code: 1009},
		{name: "tooBigFragments", cfg: small16Cfg,
			in:   cat(mf(ws.OpText, false, "0123456789"), mf(ws.OpPing, true, "p"), mf(ws.OpContinuation, true, "0123456")),
			want: []event{ctl(ws.OpPing, "p")}, code: 1009},
		{name: "invalidText", cfg: serverCfg, in: mf(ws.OpText, true, "ab\xffcd"), code: 1007},
		{name: "surrogateText", cfg: serverCfg, in: mf(ws.OpText, true, "a\xed\xa0\x80"), code: 1007},
		{name: "overlongText", cfg: serverCfg, in: mf(ws.OpText, true, "\xc0\xaf"), code: 1007},
		{name: "beyondMaxRune", cfg: serverCfg, in: mf(ws.OpText, true, "\xf4\x90\x80\x80"), code: 1007},
		{name: "textEndsMidRune", cfg: serverCfg, in: mf(ws.OpText, true, "ab\xe2\x82"), code: 1007},
		{name: "fragmentsEndMidRune", cfg: serverCfg,
			in: cat(mf(ws.OpText, false, "\xe2"), mf(ws.OpContinuation, true, "\x82")), code: 1007},
		{name: "invalidAcrossFragments", cfg: serverCfg,
			in: cat(mf(ws.OpText, false, "ok\xed"), mf(ws.OpContinuation, true, "\xa0\x80")), code: 1007},
		{name: "invalidClientText", cfg: clientCfg, in: uf(ws.OpText, true, "\xf5"), code: 1007},
		{name: "invalidBeforeTooBig", cfg: small16Cfg,
			in: cat(mf(ws.OpText, false, "\xff"), mf(ws.OpContinuation, true, strings.Repeat("x", 20))), code: 1007},
		{name: "binaryNotValidated", cfg: serverCfg, in: mf(ws.OpBinary, true, "\xff\xfe"), want: []event{msg(ws.OpBinary, "\xff\xfe")}},
		{name: "closeOneByte", cfg: serverCfg, in: mf(ws.OpClose, true, "\x03"), code: 1002},
		{name: "closeCode999", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(999, "")), code: 1002},
		{name: "closeCode1004", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1004, "")), code: 1002},
		{name: "closeCode1005", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1005, "")), code: 1002},
		{name: "closeCode1006", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1006, "")), code: 1002},
		{name: "closeCode1015", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1015, "")), code: 1002},
		{name: "closeCode1016", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1016, "")), code: 1002},
		{name: "closeCode2999", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(2999, "")), code: 1002},
		{name: "closeCode5000", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(5000, "")), code: 1002},
		{name: "closeBadReason", cfg: serverCfg, in: mf(ws.OpClose, true, closePayload(1000, "a\xc3")), code: 1007},
		{name: "messageThenViolation", cfg: serverCfg,
			in: cat(mf(ws.OpText, true, "first"), uf(ws.OpText, true, "x")), want: []event{msg(ws.OpText, "first")}, code: 1002},
	}
}

func maskedBytes(s string) []byte {
	b := []byte(s)
	ws.Cipher(b, testKey, 0)
	return b
}

func (c frameCase) wantOutcome(tb testing.TB) outcome {
	tb.Helper()
	o := outcome{events: c.want, code: c.code, closed: c.closed}
	if c.code == 0 && !c.closed {
		// Truncated inputs hold what they could not complete; derive it from a byte-wise
		// feed only where the case itself does not say.
		o.buffered = feedChunks(tb, c.cfg, bytewise(c.in)...).buffered
	}
	return o
}

func TestReaderCases(t *testing.T) {
	for _, c := range frameCases() {
		t.Run(c.name, func(t *testing.T) {
			want := c.wantOutcome(t)
			got := feedChunks(t, c.cfg, c.in)
			if !got.equal(want) {
				t.Fatalf("whole input:\n got %v\nwant %v", got, want)
			}
			if strings.HasPrefix(c.name, "truncated") && got.buffered == 0 {
				t.Fatalf("truncated input: Buffered() = 0")
			}
		})
	}
}

// TestReaderSplitEverywhere is the core property: however the input is cut into reads, the
// outcome is the one of feeding it whole.
func TestReaderSplitEverywhere(t *testing.T) {
	for _, c := range frameCases() {
		t.Run(c.name, func(t *testing.T) {
			want := feedChunks(t, c.cfg, c.in)
			for i := 0; i <= len(c.in); i++ {
				if got := feedChunks(t, c.cfg, c.in[:i], c.in[i:]); !got.equal(want) {
					t.Fatalf("split at %d:\n got %v\nwant %v", i, got, want)
				}
			}
			if got := feedChunks(t, c.cfg, bytewise(c.in)...); !got.equal(want) {
				t.Fatalf("byte by byte:\n got %v\nwant %v", got, want)
			}
			if len(c.in) > 2 {
				a, b := len(c.in)/3, 2*len(c.in)/3
				if got := feedChunks(t, c.cfg, c.in[:a], nil, c.in[a:b], c.in[b:]); !got.equal(want) {
					t.Fatalf("three pieces:\n got %v\nwant %v", got, want)
				}
			}
		})
	}
}

// TestReaderFailFastUTF8 checks that invalid text is refused before the rest of the frame
// arrives.
func TestReaderFailFastUTF8(t *testing.T) {
	payload := "ab\xff" + strings.Repeat("z", 200)
	frame := mf(ws.OpText, true, payload)
	hl := HeaderLen(len(payload), true)
	got := feedChunks(t, serverCfg, frame[:hl+2], frame[hl+2:hl+3])
	if got.code != ws.StatusInvalidFramePayloadData {
		t.Fatalf("header + 3 bytes: code %d, want 1007", got.code)
	}
	if got := feedChunks(t, serverCfg, frame[:hl+2]); got.code != 0 {
		t.Fatalf("header + 2 valid bytes: code %d, want none", got.code)
	}

	// The same inside a later fragment, mid-frame: F4 90 is invalid at its second byte.
	frag := cat(mf(ws.OpText, false, "ok"), mf(ws.OpContinuation, true, "x\xf4\x90\x80\x80"+strings.Repeat("y", 50)))
	first := len(mf(ws.OpText, false, "ok"))
	cut := first + HeaderLen(55, true) + 3
	if got := feedChunks(t, serverCfg, frag[:cut]); got.code != ws.StatusInvalidFramePayloadData {
		t.Fatalf("fragment cut after F4 90: code %d, want 1007", got.code)
	}
	if got := feedChunks(t, serverCfg, frag[:cut-1]); got.code != 0 {
		t.Fatalf("fragment cut after F4: code %d, want none", got.code)
	}
}

// TestReaderNoHeldMemory checks that nothing is held once messages are complete, and that the
// held slice grows with arriving bytes rather than declared lengths.
func TestReaderNoHeldMemory(t *testing.T) {
	in := cat(mf(ws.OpText, false, "Hel"), mf(ws.OpPing, true, "p"), mf(ws.OpContinuation, true, "lo"),
		mf(ws.OpBinary, true, bigPayload))
	for i := 0; i <= len(in); i++ {
		var r Reader
		var rec recorder
		for _, c := range [][]byte{in[:i], in[i:]} {
			if err := r.Feed(serverCfg, bytes.Clone(c), &rec); err != nil {
				t.Fatalf("split %d: %v", i, err)
			}
		}
		if len(rec.events) != 3 {
			t.Fatalf("split %d: events %v", i, rec.events)
		}
		if r.Buffered() != 0 || r.buf != nil {
			t.Fatalf("split %d: Buffered %d, held slice nil: %v", i, r.Buffered(), r.buf == nil)
		}
	}

	// A control frame split inside a fragmented message is parked after the message and
	// removed again, leaving the message bytes alone.
	var r Reader
	var rec recorder
	ping := mf(ws.OpPing, true, "ping!")
	steps := [][]byte{mf(ws.OpText, false, "abc"), ping[:9], ping[9:]}
	wantHeld := []int{3, 3 + 3, 3} // the ping header is 6 bytes, 3 of its payload are parked
	for i, s := range steps {
		if err := r.Feed(serverCfg, bytes.Clone(s), &rec); err != nil {
			t.Fatal(err)
		}
		if r.Buffered() != wantHeld[i] {
			t.Fatalf("step %d: Buffered %d, want %d", i, r.Buffered(), wantHeld[i])
		}
	}
	if string(r.buf) != "abc" {
		t.Fatalf("held %q, want %q", r.buf, "abc")
	}

	// A header declaring 1 MiB followed by a few bytes must not allocate for the declaration.
	r.Reset()
	if r.buf != nil || r.Buffered() != 0 {
		t.Fatal("Reset kept memory")
	}
	big := AppendMaskedFrame(nil, ws.OpBinary, true, testKey, make([]byte, DefaultMaxMessage))
	if err := r.Feed(serverCfg, big[:HeaderLen(DefaultMaxMessage, true)+10], &rec); err != nil {
		t.Fatal(err)
	}
	if r.Buffered() != 10 || cap(r.buf) > 1024 {
		t.Fatalf("after 10 payload bytes: Buffered %d, cap %d", r.Buffered(), cap(r.buf))
	}
}

// TestReaderFastPath checks that a whole frame is delivered in place without allocating.
func TestReaderFastPath(t *testing.T) {
	frame := mf(ws.OpText, true, "hello, world")
	buf := bytes.Clone(frame)
	var r Reader
	var inPlace bool
	h := funcHandler(func(op ws.OpCode, p []byte) error {
		inPlace = len(p) > 0 && &p[0] == &buf[len(buf)-len(p)]
		return nil
	})
	if err := r.Feed(serverCfg, buf, h); err != nil {
		t.Fatal(err)
	}
	if !inPlace {
		t.Fatal("message was not delivered as a sub-slice of the input")
	}
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, frame)
		if err := r.Feed(serverCfg, buf, h); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("fast path: %v allocs per Feed, want 0", allocs)
	}
}

type funcHandler func(op ws.OpCode, p []byte) error

func (f funcHandler) Message(op ws.OpCode, p []byte) error { return f(op, p) }
func (f funcHandler) Control(op ws.OpCode, p []byte) error { return f(op, p) }

func TestReaderHandlerError(t *testing.T) {
	boom := errors.New("boom")
	var r Reader
	rec := recorder{fail: boom}
	in := cat(mf(ws.OpText, true, "a"), mf(ws.OpText, true, "b"))
	if err := r.Feed(serverCfg, in, &rec); err != boom {
		t.Fatalf("Feed = %v, want the handler's error", err)
	}
	if len(rec.events) != 1 {
		t.Fatalf("events after the error: %v", rec.events)
	}
	if err := r.Feed(serverCfg, mf(ws.OpText, true, "c"), &rec); !errors.Is(err, ErrStopped) {
		t.Fatalf("Feed after error = %v, want ErrStopped", err)
	}
	r.Reset()
	rec.fail = nil
	if err := r.Feed(serverCfg, mf(ws.OpText, true, "d"), &rec); err != nil {
		t.Fatalf("Feed after Reset = %v", err)
	}
	if got := rec.events[len(rec.events)-1]; got != msg(ws.OpText, "d") {
		t.Fatalf("after Reset got %v", got)
	}
}

func TestReaderClosed(t *testing.T) {
	var r Reader
	var rec recorder
	if err := r.Feed(serverCfg, cat(mf(ws.OpText, false, "x"), mf(ws.OpClose, true, "")), &rec); err != nil {
		t.Fatal(err)
	}
	if !r.Closed() || r.Buffered() != 0 || r.buf != nil {
		t.Fatalf("Closed %v Buffered %d", r.Closed(), r.Buffered())
	}
	if err := r.Feed(serverCfg, []byte{0xff, 0xff, 0xff}, &rec); err != nil {
		t.Fatalf("Feed after close = %v, want input ignored", err)
	}
	if len(rec.events) != 1 || r.Buffered() != 0 {
		t.Fatalf("input after close was used: %v", rec.events)
	}
}

func TestCloseErrorMessage(t *testing.T) {
	err := feedErr(t, serverCfg, uf(ws.OpText, true, "x"))
	if !strings.HasPrefix(err.Error(), "wire: close 1002: ") {
		t.Fatalf("Error() = %q", err.Error())
	}
	if ErrStopped.Error()[:6] != "wire: " {
		t.Fatalf("ErrStopped = %q", ErrStopped)
	}
}

func feedErr(tb testing.TB, cfg *Config, in []byte) error {
	tb.Helper()
	var r Reader
	return r.Feed(cfg, in, &recorder{})
}

// TestReaderSize documents the per-connection cost of a Reader.
func TestReaderSize(t *testing.T) {
	size := unsafe.Sizeof(Reader{})
	t.Logf("unsafe.Sizeof(Reader{}) = %d, unsafe.Sizeof(UTF8{}) = %d", size, unsafe.Sizeof(UTF8{}))
	if size > 96 {
		t.Fatalf("Reader is %d bytes, want <= 96", size)
	}
	if unsafe.Sizeof(UTF8{}) > 4 {
		t.Fatalf("UTF8 is %d bytes, want <= 4", unsafe.Sizeof(UTF8{}))
	}
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 100003} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + i>>8)
		}
		for _, masked := range []bool{true, false} {
			var frame []byte
			cfg := clientCfg
			if masked {
				frame = AppendMaskedFrame([]byte("pre"), ws.OpBinary, true, testKey, p)
				cfg = serverCfg
			} else {
				frame = AppendFrame([]byte("pre"), ws.OpBinary, true, p)
			}
			if !bytes.Equal(frame[:3], []byte("pre")) {
				t.Fatalf("n=%d: prefix overwritten", n)
			}
			frame = frame[3:]
			if len(frame) != HeaderLen(n, masked)+n {
				t.Fatalf("n=%d masked=%v: frame %d bytes, HeaderLen %d", n, masked, len(frame), HeaderLen(n, masked))
			}
			if err := ws.CheckHeader(mustHeader(t, frame), ws.State(0)); err != nil && masked {
				t.Fatalf("n=%d: gobwas/ws rejects the header: %v", n, err)
			}
			for _, chunks := range [][][]byte{{frame}, {frame[:len(frame)/2], frame[len(frame)/2:]}} {
				var r Reader
				var got []byte
				var calls int
				err := r.Feed(cfg, bytes.Clone(chunks[0]), funcHandler(func(op ws.OpCode, q []byte) error {
					got, calls = bytes.Clone(q), calls+1
					return nil
				}))
				for _, c := range chunks[1:] {
					if err == nil {
						err = r.Feed(cfg, bytes.Clone(c), funcHandler(func(op ws.OpCode, q []byte) error {
							got, calls = bytes.Clone(q), calls+1
							return nil
						}))
					}
				}
				if err != nil || calls != 1 || !bytes.Equal(got, p) {
					t.Fatalf("n=%d masked=%v pieces=%d: err %v calls %d equal %v", n, masked, len(chunks), err, calls, bytes.Equal(got, p))
				}
			}
		}
	}
}

func mustHeader(tb testing.TB, frame []byte) ws.Header {
	tb.Helper()
	h, err := ws.ReadHeader(bytes.NewReader(frame))
	if err != nil {
		tb.Fatalf("ws.ReadHeader: %v", err)
	}
	return h
}

func TestCloseFrames(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes, runes of 2
	for _, tc := range []struct {
		code       ws.StatusCode
		reason     string
		wantCode   ws.StatusCode
		wantReason string
	}{
		{1000, "bye", 1000, "bye"},
		{4000, "", 4000, ""},
		{1001, long, 1001, long[:122]},
		{1001, strings.Repeat("a", 130), 1001, strings.Repeat("a", 123)},
		{1005, "dropped", 1005, ""},
		{1006, "dropped", 1005, ""},
		{0, "", 1005, ""},
	} {
		for _, masked := range []bool{false, true} {
			var frame []byte
			cfg := clientCfg
			if masked {
				frame = AppendMaskedClose(nil, testKey, tc.code, tc.reason)
				cfg = serverCfg
			} else {
				frame = AppendClose(nil, tc.code, tc.reason)
			}
			var got []byte
			var r Reader
			err := r.Feed(cfg, frame, funcHandler(func(op ws.OpCode, p []byte) error {
				if op != ws.OpClose {
					t.Fatalf("op %v", op)
				}
				got = bytes.Clone(p)
				return nil
			}))
			if err != nil {
				t.Fatalf("code %d masked %v: %v", tc.code, masked, err)
			}
			code, reason := ParseClose(got)
			if code != tc.wantCode || string(reason) != tc.wantReason {
				t.Fatalf("code %d masked %v: got %d %q, want %d %q", tc.code, masked, code, reason, tc.wantCode, tc.wantReason)
			}
			if len(got) > maxControlPayload || !utf8.Valid(reason) {
				t.Fatalf("payload of %d bytes, reason valid %v", len(got), utf8.Valid(reason))
			}
		}
	}
}

func TestValidCloseCode(t *testing.T) {
	valid := map[ws.StatusCode]bool{}
	for _, r := range [][2]ws.StatusCode{{1000, 1003}, {1007, 1014}, {3000, 4999}} {
		for c := r[0]; c <= r[1]; c++ {
			valid[c] = true
		}
	}
	for c := 0; c <= 0xFFFF; c++ {
		if got := ValidCloseCode(ws.StatusCode(c)); got != valid[ws.StatusCode(c)] {
			t.Fatalf("ValidCloseCode(%d) = %v", c, got)
		}
	}
}

var utf8Cases = []string{
	"", "plain ascii text that is longer than eight bytes", "héllo", "€", "𝄞", "\u07ff\u0800\uffff",
	"\U00010000\U0010ffff", "\xed\x9f\xbf", "\xee\x80\x80",
	"\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xc2", "\xe0\x80\x80", "\xe0\x9f\xbf", "\xe0\xa0",
	"\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\xf0\x90\x80",
	"\xf4\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xf5\x80\x80\x80", "\xf8", "\xfe", "\xff",
	"abcdefgh\xe2\x82\xacabcdefgh", "abcdefgh\xe2\x82abcdefgh", "12345678\xff2345678",
	"κόσμε" + strings.Repeat("x", 30) + "\xce",
}

func TestUTF8MatchesStdlib(t *testing.T) {
	for _, s := range utf8Cases {
		b := []byte(s)
		want := utf8.Valid(b)
		for i := 0; i <= len(b); i++ {
			var v UTF8
			got := v.Write(b[:i]) && v.Write(b[i:]) && v.Complete()
			if got != want {
				t.Fatalf("%q split at %d: %v, want %v", s, i, got, want)
			}
		}
		var v UTF8
		ok := true
		for i := range b {
			ok = ok && v.Write(b[i:i+1])
		}
		if got := ok && v.Complete(); got != want {
			t.Fatalf("%q byte by byte: %v, want %v", s, got, want)
		}
	}
}

// TestUTF8FailFast checks that Write refuses the first byte that cannot continue valid text.
func TestUTF8FailFast(t *testing.T) {
	for _, tc := range []struct {
		in  string
		bad int // index of the first byte Write must refuse
	}{
		{"\xf4\x90", 1}, {"\xed\xa0", 1}, {"\xc0", 0}, {"\xc1", 0}, {"\xe0\x80", 1}, {"\xe0\x9f", 1},
		{"\xf0\x80", 1}, {"\xf0\x8f", 1}, {"\xf5", 0}, {"\xff", 0}, {"a\x80", 1}, {"\xe2\x82a", 2},
		{"\xf0\x9d\x84\x9e\x9e", 4},
	} {
		var v UTF8
		for i := 0; i < len(tc.in); i++ {
			ok := v.Write([]byte{tc.in[i]})
			if ok != (i < tc.bad) {
				t.Fatalf("%q byte %d: Write = %v", tc.in, i, ok)
			}
			if !ok {
				break
			}
		}
		// Fed at once up to and including the bad byte, Write must refuse too.
		var w UTF8
		if w.Write([]byte(tc.in[:tc.bad+1])) {
			t.Fatalf("%q whole: Write accepted", tc.in)
		}
		var u UTF8
		if !u.Write([]byte(tc.in[:tc.bad])) {
			t.Fatalf("%q prefix before the bad byte refused", tc.in)
		}
	}
	var v UTF8
	if !v.Write([]byte("\xe2\x82")) || v.Complete() {
		t.Fatal("incomplete sequence reported complete")
	}
	v.Reset()
	if !v.Complete() {
		t.Fatal("Reset did not return to a boundary")
	}
}
