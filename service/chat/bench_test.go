package chat

import (
	"bytes"
	"testing"
	"time"
)

var sayRequest = []byte(`{"type":"say","room":"lobby","text":"hello, everyone in the lobby","id":42}`)

// BenchmarkDecodeSay is the decoding of one say.
func BenchmarkDecodeSay(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(sayRequest)))
	for b.Loop() {
		if _, err := decode(sayRequest); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendMessage is the encoding of one live message.
func BenchmarkAppendMessage(b *testing.B) {
	b.ReportAllocs()
	m := message{Room: "lobby", User: "alice", Text: "hello, everyone in the lobby", Seq: 123456, Prev: 123455, TS: "2026-01-02T03:04:05.678Z"}
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = appendMessage(buf[:0], &m, "1767323045678901234")
	}
}

// BenchmarkSay is the whole say path of one instance on a real NATS
// server with JetStream: the event in, decoding, the checks, the append to
// the room's chain, the live copy to the room, and the sent reply, one say
// at a time from one connection.
func BenchmarkSay(b *testing.B) {
	r := newRig(b, 1, 0)
	fs := newFakeShard(b, r)
	id, ch := fs.conn("alice")
	fs.send(b, id, []byte(`{"type":"join","room":"lobby"}`))
	if got := <-ch; !bytes.Contains(got, []byte(`"joined"`)) {
		b.Fatalf("join: %s", got)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(sayRequest)))
	for b.Loop() {
		fs.send(b, id, sayRequest)
		select {
		case got := <-ch:
			if !bytes.HasPrefix(got, []byte(`{"type":"sent"`)) {
				b.Fatalf("say: %s", got)
			}
		case <-time.After(waitLimit):
			b.Fatal("no answer to a say")
		}
	}
}
