package chat

import "testing"

func TestSmoke(t *testing.T) {
	r := newRig(t, 1, 1)
	a := r.register(r.shards[0], "alice")
	j := a.join("lobby")
	t.Log(j.raw)
	s := a.say("lobby", "hi")
	t.Log(s.raw)
	m := a.message("lobby", "hi")
	t.Log(m.raw)
	b := r.register(r.shards[0], "bob")
	j = b.join("lobby")
	t.Log(j.raw)
	p := a.presence("lobby", "bob", "join")
	t.Log(p.raw)
}
