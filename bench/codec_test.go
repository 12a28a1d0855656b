package bench

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// wireRecorder is a WireConn that keeps what was sent.
type wireRecorder struct {
	idx  int
	sent []sentFrame
}

type sentFrame struct {
	op ws.OpCode
	p  string
}

func (w *wireRecorder) Index() int { return w.idx }

func (w *wireRecorder) Send(op ws.OpCode, p []byte) error {
	w.sent = append(w.sent, sentFrame{op, string(p)})
	return nil
}

// eventLog is an EventSink that keeps the events.
type eventLog []Event

func (l *eventLog) Event(_ WireConn, ev Event, _ int64) { *l = append(*l, ev) }

// checkEvents compares decoded events with the expected ones.
func checkEvents(t *testing.T, got eventLog, want []Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("event %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestBenchCodec(t *testing.T) {
	k, err := NewCodec(CodecConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := &wireRecorder{}
	if ready, err := k.Start(c); !ready || err != nil || len(c.sent) != 0 {
		t.Fatalf("start: ready %v err %v sent %v", ready, err, c.sent)
	}
	if err := k.Join(c, "r3"); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 40)
	Payload{Time: 5, Sender: 3, Seq: 9}.Put(msg)
	if err := k.Publish(c, "r3", msg); err != nil {
		t.Fatal(err)
	}
	if len(c.sent) != 2 || c.sent[0] != (sentFrame{ws.OpText, "join r3"}) || c.sent[1] != (sentFrame{ws.OpBinary, string(msg)}) {
		t.Fatalf("sent %q", c.sent)
	}
	var evs eventLog
	k.Decode(c, ws.OpText, []byte("joined r3"), 0, &evs)
	k.Decode(c, ws.OpBinary, msg, 0, &evs)
	k.Decode(c, ws.OpText, []byte("hello"), 0, &evs)
	k.Decode(c, ws.OpBinary, msg[:10], 0, &evs)
	want := []Event{
		{Kind: EventJoined, Room: "r3"},
		{Kind: EventMessage, Payload: Payload{Time: 5, Sender: 3, Seq: 9}},
		{Kind: EventUnexpected, Cause: `text message "hello"`},
		{Kind: EventUnexpected, Cause: "binary message of 10 bytes, shorter than a payload header"},
	}
	checkEvents(t, evs, want)
	if _, err := NewCodec(CodecConfig{Proto: "stomp"}); err == nil {
		t.Error("unknown protocol accepted")
	}
}

// verifyHS256 checks token's signature with secret and returns its claims.
func verifyHS256(t *testing.T, token string, secret []byte) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", token, len(parts))
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		t.Fatalf("token %q: bad signature", token)
	}
	var head, claims map[string]any
	for i, v := range []*map[string]any{&head, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("token %q: part %d is not base64url JSON", token, i)
		}
	}
	if head["alg"] != "HS256" {
		t.Fatalf("header %v", head)
	}
	return claims
}

func TestCentrifugoCodecCommands(t *testing.T) {
	k, _ := NewCodec(CodecConfig{Proto: ProtoCentrifugo, HMACSecret: "s3cret", Offset: 100, Conns: 4})
	c := &wireRecorder{idx: 2}
	if ready, err := k.Start(c); ready || err != nil {
		t.Fatalf("start: ready %v err %v; want a session to wait for", ready, err)
	}
	_ = k.Join(c, "r1")
	msg := make([]byte, 256)
	for seq := range uint64(2) {
		Payload{Time: 1700000000123456789, Sender: 1, Seq: seq}.Put(msg)
		if err := k.Publish(c, "r1", msg); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.sent) != 4 {
		t.Fatalf("sent %q", c.sent)
	}
	type command struct {
		ID      int `json:"id"`
		Connect *struct {
			Token string `json:"token"`
		} `json:"connect"`
		Subscribe *struct {
			Channel string `json:"channel"`
		} `json:"subscribe"`
		Publish *struct {
			Channel string          `json:"channel"`
			Data    json.RawMessage `json:"data"`
		} `json:"publish"`
	}
	var cmds []command
	for _, f := range c.sent {
		var cmd command
		if f.op != ws.OpText || json.Unmarshal([]byte(f.p), &cmd) != nil {
			t.Fatalf("frame %v %q is not a JSON text command", f.op, f.p)
		}
		cmds = append(cmds, cmd)
	}
	if cmds[0].ID != 1 || cmds[0].Connect == nil {
		t.Fatalf("first command %q", c.sent[0].p)
	}
	// Connection 2 of the process whose first is global 102.
	if claims := verifyHS256(t, cmds[0].Connect.Token, []byte("s3cret")); claims["sub"] != "b102" {
		t.Errorf("claims %v", claims)
	}
	if cmds[1].ID != 2 || cmds[1].Subscribe == nil || cmds[1].Subscribe.Channel != "bench:r1" {
		t.Errorf("second command %q", c.sent[1].p)
	}
	for i, cmd := range cmds[2:] {
		if cmd.ID != 3+i || cmd.Publish == nil || cmd.Publish.Channel != "bench:r1" {
			t.Fatalf("publish %d: %q", i, c.sent[2+i].p)
		}
		if len(cmd.Publish.Data) != len(msg) {
			t.Errorf("data of %d bytes, want --size %d: %s", len(cmd.Publish.Data), len(msg), cmd.Publish.Data)
		}
		pl, ok := ParseCentrifugoData(cmd.Publish.Data)
		if !ok || pl != (Payload{Time: 1700000000123456789, Sender: 1, Seq: uint64(i)}) {
			t.Errorf("data %s read as %+v %v", cmd.Publish.Data, pl, ok)
		}
	}

	// Without a secret the connect has no token, for an insecure server.
	k, _ = NewCodec(CodecConfig{Proto: ProtoCentrifugo, Conns: 1})
	c = &wireRecorder{}
	_, _ = k.Start(c)
	if len(c.sent) != 1 || strings.Contains(c.sent[0].p, "token") {
		t.Errorf("insecure connect %q", c.sent)
	}
}

func TestCentrifugoCodecDecode(t *testing.T) {
	k, _ := NewCodec(CodecConfig{Proto: ProtoCentrifugo, Conns: 2})
	c := &wireRecorder{idx: 1}
	_ = k.Join(c, "r0")
	c.sent = nil
	data := string(AppendCentrifugoData(nil, Payload{Time: 42, Sender: 0, Seq: 7}, 64))
	// What Centrifugo v6 sends, one message per line, several per frame.
	frames := []string{
		`{"id":1,"connect":{"client":"a11e","version":"6.9.1 OSS","ping":25,"pong":true}}`,
		`{"id":2,"subscribe":{}}`,
		`{"push":{"channel":"bench:r0","pub":{"data":` + data + `,"info":{"user":"b1","client":"a11e"}}}}` + "\n" + `{"id":3,"publish":{}}`,
		`{}`,
		`{"push":{"channel":"bench:r0","pub":{"info":{"user":"b1"},"data":` + data + `}}}`,
		`{"id":4,"error":{"code":103,"message":"permission denied"}}`,
		`{"push":{"channel":"bench:r0","pub":{"data":{"hello":1}}}}`,
		`{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}`,
		"not json\n",
	}
	var evs eventLog
	for _, f := range frames {
		k.Decode(c, ws.OpText, []byte(f), 0, &evs)
	}
	k.Decode(c, ws.OpBinary, []byte{1, 2}, 0, &evs)
	pl := Payload{Time: 42, Sender: 0, Seq: 7}
	want := []Event{
		{Kind: EventReady},
		{Kind: EventJoined, Room: "r0"},
		{Kind: EventMessage, Payload: pl},
		{Kind: EventMessage, Payload: pl},
		{Kind: EventUnexpected, Cause: "publish error 103 permission denied"},
		{Kind: EventUnexpected, Cause: `publication without bench data: "{\"push\":{\"channel\":\"bench:r0\",\"pub\":{\"data\":{\"hello\":1}}}}"`},
		{Kind: EventUnexpected, Cause: "disconnect 3001 shutdown"},
		{Kind: EventUnexpected, Cause: `not JSON: "not json"`},
		{Kind: EventUnexpected, Cause: "binary message from a JSON protocol server"},
	}
	checkEvents(t, evs, want)
	// The ping was answered, and nothing else was sent.
	if len(c.sent) != 1 || c.sent[0] != (sentFrame{ws.OpText, "{}"}) {
		t.Errorf("sent %q, want one pong", c.sent)
	}

	var refused eventLog
	k.Decode(c, ws.OpText, []byte(`{"id":1,"error":{"code":109,"message":"token expired"}}`), 0, &refused)
	if len(refused) != 1 || !reflect.DeepEqual(refused[0], Event{Kind: EventRefused, Cause: "connect error 109 token expired"}) {
		t.Errorf("refused connect: %+v", refused)
	}
}

func TestCentrifugoData(t *testing.T) {
	for _, size := range []int{0, 24, 57, 64, 256, 1000} {
		pl := Payload{Time: 1<<63 - 1, Sender: 1<<64 - 1, Seq: 12345}
		b := AppendCentrifugoData([]byte("prefix"), pl, size)
		data := b[len("prefix"):]
		if !json.Valid(data) {
			t.Fatalf("size %d: not JSON: %s", size, data)
		}
		if got, ok := ParseCentrifugoData(data); !ok || got != pl {
			t.Errorf("size %d: read %+v %v", size, got, ok)
		}
		if size >= 80 && len(data) != size {
			t.Errorf("size %d: data of %d bytes", size, len(data))
		}
	}
	// Fields in another order or with spaces go through encoding/json.
	if got, ok := ParseCentrifugoData([]byte(`{ "q": 3, "s": 2, "t": 1 }`)); !ok || got != (Payload{Time: 1, Sender: 2, Seq: 3}) {
		t.Errorf("reordered: %+v %v", got, ok)
	}
	for _, bad := range []string{``, `{}`, `{"t":1,"s":2}`, `{"t":"1","s":2,"q":3}`, `{"t":99999999999999999999,"s":1,"q":1}`, `[1,2,3]`} {
		if got, ok := ParseCentrifugoData([]byte(bad)); ok {
			t.Errorf("%s read as %+v", bad, got)
		}
	}
}

// FuzzCentrifugoDecode feeds arbitrary server messages to the decoder: it
// must not panic, and a publication it reads must carry what was written.
func FuzzCentrifugoDecode(f *testing.F) {
	data := string(AppendCentrifugoData(nil, Payload{Time: 1, Sender: 2, Seq: 3}, 64))
	for _, s := range []string{
		`{"id":1,"connect":{"client":"x","ping":25,"pong":true}}`,
		`{"push":{"channel":"bench:r0","pub":{"data":` + data + `}}}` + "\n{}",
		`{"push":{"channel":"bench:r0","pub":{"data":{"t":1,"s":2,"q":`,
		`{"id":2,"error":{"code":100,"message":"internal"}}`,
		"\n\n{}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		k, _ := NewCodec(CodecConfig{Proto: ProtoCentrifugo, Conns: 1})
		var evs eventLog
		k.Decode(&wireRecorder{}, ws.OpText, p, 0, &evs)
		for _, ev := range evs {
			if ev.Kind == 0 || ev.Kind > EventUnexpected {
				t.Fatalf("event of kind %d", ev.Kind)
			}
		}
	})
}

func FuzzParseCentrifugoData(f *testing.F) {
	f.Add(int64(1), uint64(2), uint64(3), 64)
	f.Add(int64(-1), uint64(0), uint64(1<<64-1), 0)
	f.Fuzz(func(t *testing.T, tm int64, s, q uint64, size int) {
		size = max(0, min(size, 4096))
		pl := Payload{Time: tm, Sender: s, Seq: q}
		got, ok := ParseCentrifugoData(AppendCentrifugoData(nil, pl, size))
		if !ok || got != pl {
			t.Fatalf("%+v size %d read as %+v %v", pl, size, got, ok)
		}
	})
}

func TestRedactArgs(t *testing.T) {
	got := redactArgs([]string{"fanout", "--hmac-secret", "abc", "--conns", "5", "-hmac-secret=def", "--proto=centrifugo"})
	want := []string{"fanout", "--hmac-secret", redacted, "--conns", "5", "-hmac-secret=" + redacted, "--proto=centrifugo"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// countSink counts messages, as a scenario's handler would.
type countSink struct{ n int }

func (s *countSink) Event(_ WireConn, ev Event, _ int64) {
	if ev.Kind == EventMessage {
		s.n++
	}
}

// BenchmarkCentrifugoDecodePush is the bench's cost of one delivery from
// Centrifugo: a 256-byte publication as Centrifugo pushes it.
func BenchmarkCentrifugoDecodePush(b *testing.B) {
	k, _ := NewCodec(CodecConfig{Proto: ProtoCentrifugo, Conns: 1})
	data := AppendCentrifugoData(nil, Payload{Time: 1700000000123456789, Sender: 3, Seq: 12345}, 256)
	push := []byte(`{"push":{"channel":"bench:r3","pub":{"data":` + string(data) + `,"info":{"user":"b3","client":"a11e84a8-87d2-4a6d-bc6e-7c5db7e2be09"}}}}`)
	c, sink := &wireRecorder{}, &countSink{}
	b.ReportAllocs()
	b.SetBytes(int64(len(push)))
	for b.Loop() {
		k.Decode(c, ws.OpText, push, 0, sink)
	}
	if sink.n != b.N {
		b.Fatalf("%d messages decoded of %d", sink.n, b.N)
	}
}
