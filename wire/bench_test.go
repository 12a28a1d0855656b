package wire

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

type nopHandler struct{}

func (nopHandler) Message(ws.OpCode, []byte) error { return nil }
func (nopHandler) Control(ws.OpCode, []byte) error { return nil }

// benchFeed measures Feed on in as one read per iteration. The input is copied into the read
// buffer each time, as read(2) would, because Feed unmasks in place.
func benchFeed(b *testing.B, cfg *Config, in []byte, payload int) {
	b.Helper()
	b.ReportAllocs()
	b.SetBytes(int64(payload))
	buf := make([]byte, len(in))
	var r Reader
	var h nopHandler
	for b.Loop() {
		copy(buf, in)
		if err := r.Feed(cfg, buf, h); err != nil {
			b.Fatal(err)
		}
	}
}

func textPayload(n int) []byte {
	return []byte(strings.Repeat("The quick brown fox jumps over the lazy dog. ", n/45+1)[:n])
}

func BenchmarkFeed_Text64(b *testing.B) {
	p := textPayload(64)
	benchFeed(b, serverCfg, AppendMaskedFrame(nil, ws.OpText, true, testKey, p), len(p))
}

func BenchmarkFeed_Text1K(b *testing.B) {
	p := textPayload(1024)
	benchFeed(b, serverCfg, AppendMaskedFrame(nil, ws.OpText, true, testKey, p), len(p))
}

func BenchmarkFeed_Binary64K(b *testing.B) {
	p := bytes.Repeat([]byte{0, 1, 2, 3, 0xfe, 0xff}, 65536/6+1)[:65536]
	benchFeed(b, serverCfg, AppendMaskedFrame(nil, ws.OpBinary, true, testKey, p), len(p))
}

func BenchmarkFeed_Fragmented1K(b *testing.B) {
	p := textPayload(1024)
	var in []byte
	for i := range 4 {
		op := ws.OpContinuation
		if i == 0 {
			op = ws.OpText
		}
		in = AppendMaskedFrame(in, op, i == 3, testKey, p[i*256:(i+1)*256])
	}
	benchFeed(b, serverCfg, in, len(p))
}

// BenchmarkFeed_Cases runs the shared case table; protocol violations reset the Reader.
func BenchmarkFeed_Cases(b *testing.B) {
	for _, c := range frameCases() {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.in)))
			buf := make([]byte, len(c.in))
			var r Reader
			var h nopHandler
			for b.Loop() {
				copy(buf, c.in)
				r.Reset()
				_ = r.Feed(c.cfg, buf, h)
			}
		})
	}
}

func benchUTF8(b *testing.B, p []byte) {
	if !utf8.Valid(p) {
		b.Fatal("benchmark input is not UTF-8")
	}
	b.Run("UTF8.Write", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			var v UTF8
			if !v.Write(p) || !v.Complete() {
				b.Fatal("refused")
			}
		}
	})
	b.Run("utf8.Valid", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			if !utf8.Valid(p) {
				b.Fatal("refused")
			}
		}
	})
}

func BenchmarkUTF8_1K_ASCII(b *testing.B) { benchUTF8(b, textPayload(1024)) }

func BenchmarkUTF8_1K_Mixed(b *testing.B) {
	s := []byte(strings.Repeat("héllo wörld — ☃ 𝄞 καλημέρα ", 40))
	// Cut mid-rune on purpose: Write must carry the open sequence, utf8.Valid would refuse it,
	// so trim to the last boundary for a fair comparison.
	s = s[:1024]
	for !utf8.Valid(s) {
		s = s[:len(s)-1]
	}
	benchUTF8(b, s)
}

func BenchmarkAppendFrame_256(b *testing.B) {
	p := textPayload(256)
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		dst = AppendFrame(dst[:0], ws.OpText, true, p)
	}
}

// BenchmarkFeed_Deflated1K reads a compressed 1 KiB text message: the
// decompressor and the output buffer come from pools, so the steady state
// allocates nothing.
func BenchmarkFeed_Deflated1K(b *testing.B) {
	p := textPayload(1024)
	benchFeed(b, deflateCfg, AppendMaskedDeflatedFrame(nil, ws.OpText, testKey, p), len(p))
}

func BenchmarkAppendDeflatedFrame_1K(b *testing.B) {
	p := textPayload(1024)
	dst := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		var ok bool
		if dst, ok = AppendDeflatedFrame(dst[:0], ws.OpText, p); !ok {
			b.Fatal("1 KiB of text did not compress")
		}
	}
}
