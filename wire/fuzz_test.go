package wire

import (
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// FuzzReader feeds any input whole, split at a chosen point and byte by byte: the outcomes
// must be identical, and Feed must never panic.
func FuzzReader(f *testing.F) {
	for _, c := range frameCases() {
		var mode byte
		switch c.cfg {
		case clientCfg:
			mode = 1
		case deflateCfg:
			mode = 2
		case small16Cfg:
			mode = 4
		}
		f.Add(c.in, uint16(len(c.in)/2), mode)
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16, mode byte) {
		cfg := &Config{Role: Role(mode & 1), Deflate: mode&2 != 0}
		if mode&4 != 0 {
			cfg.MaxMessage = 16
		}
		at := int(split) % (len(in) + 1)
		whole := feedChunks(t, cfg, in)
		if got := feedChunks(t, cfg, in[:at], in[at:]); !got.equal(whole) {
			t.Fatalf("split at %d:\n got %v\nwant %v", at, got, whole)
		}
		if got := feedChunks(t, cfg, bytewise(in)...); !got.equal(whole) {
			t.Fatalf("byte by byte:\n got %v\nwant %v", got, whole)
		}
		for _, e := range whole.events {
			if !e.control && e.op == ws.OpText && !utf8.ValidString(e.payload) {
				t.Fatalf("invalid text delivered: %q", e.payload)
			}
			if e.control && e.op == ws.OpClose {
				code, reason := ParseClose([]byte(e.payload))
				if len(e.payload) > 0 && !ValidCloseCode(code) || !utf8.Valid(reason) {
					t.Fatalf("invalid close delivered: %q", e.payload)
				}
			}
		}
	})
}

// FuzzUTF8 checks that the incremental validator agrees with utf8.Valid for any split.
func FuzzUTF8(f *testing.F) {
	for _, s := range utf8Cases {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		at := int(split) % (len(in) + 1)
		want := utf8.Valid(in)
		var v UTF8
		if got := v.Write(in[:at]) && v.Write(in[at:]) && v.Complete(); got != want {
			t.Fatalf("split at %d: %v, want %v", at, got, want)
		}
		// Fail fast, but never early: a prefix of valid text is never refused, and a prefix
		// accepted at a boundary is valid text by itself.
		var w UTF8
		ok := w.Write(in[:at])
		if !ok && want {
			t.Fatalf("prefix %q of valid text refused", in[:at])
		}
		if ok && w.Complete() != utf8.Valid(in[:at]) {
			t.Fatalf("prefix %q: Complete %v, utf8.Valid %v", in[:at], w.Complete(), !w.Complete())
		}
	})
}
