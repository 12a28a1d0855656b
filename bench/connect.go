package bench

import (
	"context"
	"flag"
	"time"

	"github.com/shoal-gw/shoal/bench/client"
)

// connectScenario ramps connections up and holds them idle: how many a
// server takes, how fast, and at what memory.
type connectScenario struct {
	hold      time.Duration
	reconnect bool
}

func (*connectScenario) Name() string { return "connect" }

func (*connectScenario) Path() string    { return "/ws/echo" }
func (*connectScenario) Units() string   { return "" }
func (*connectScenario) Latency() string { return "" }

func (*connectScenario) Summary() string {
	return "ramp up to --conns idle connections at --rate per second and hold them for --hold"
}

func (s *connectScenario) Flags(fs *flag.FlagSet) {
	fs.DurationVar(&s.hold, "hold", 30*time.Second, "how long to hold the connections once all are open")
	fs.BoolVar(&s.reconnect, "reconnect", false, "dial a connection again when the server closes it or it drops, to the next --url, after the delay the close reason asks for (\"reconnect in 1500ms\") or a backoff with jitter: the clients of a fleet through restarts")
}

func (s *connectScenario) Run(ctx context.Context, env *Env) error {
	env.Recorder("handshake")
	env.Reconnect = s.reconnect
	_, n := env.Share(env.Opts.Conns)
	env.Ramp(ctx, n, env.ShareRate(env.Opts.Rate), idleHandler{env: env})
	if err := env.Barrier(ctx, "ramped"); err != nil {
		return err
	}
	// Let the server settle before its memory is read: half the hold.
	env.Clock.Sleep(ctx, s.hold/2)
	if err := env.Barrier(ctx, "measure"); err != nil {
		return err
	}
	env.Clock.Sleep(ctx, s.hold-s.hold/2)
	return env.Barrier(ctx, "held")
}

// idleHandler sends nothing; the engine answers the server's WebSocket
// pings, and the codec its protocol's own.
type idleHandler struct{ env *Env }

func (idleHandler) Open(*client.Conn) {}

func (h idleHandler) Event(*client.Conn, Event, int64) {
	h.env.Stats.Received.Add(1)
}

func (idleHandler) Closed(*client.Conn, error) {}
