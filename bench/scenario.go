package bench

import (
	"context"
	"flag"
)

// Scenario is one kind of load. Adding a scenario is a new file with a type
// implementing it and its line in Scenarios: run, compare, sweep, the
// report and the plot take everything else from these methods.
//
// A scenario runs in each bench process on its share of the load (see
// Env.Share); it counts into Env.Stats and Env's recorders, fills its own
// parts of Env.Report, and uses Env.Barrier where every process must have
// reached the same point (all members joined, all connections held) before
// any goes on.
type Scenario interface {
	// Name is the command-line name: shoal bench NAME.
	Name() string
	// Summary is one line for the usage text.
	Summary() string
	// Path is the endpoint of the bench protocol the scenario speaks, such
	// as /ws/echo: --url defaults to it on 127.0.0.1:8080, and compare
	// appends it to each target's address.
	Path() string
	// Units names what the scenario receives, for rates ("echoes"); empty
	// when it sends no messages.
	Units() string
	// Latency names the scenario's own latency histogram ("rtt"); empty
	// when it only times handshakes.
	Latency() string
	// Flags registers the scenario's own flags.
	Flags(fs *flag.FlagSet)
	// Run executes the scenario until it is done or ctx is done.
	Run(ctx context.Context, env *Env) error
}

// Scenarios returns a fresh instance of every scenario, in usage order.
func Scenarios() []Scenario {
	return []Scenario{
		&connectScenario{},
		&echoScenario{},
		&fanoutScenario{},
		&chatScenario{},
	}
}

// lookup returns a fresh instance of the scenario called name.
func lookup(name string) Scenario {
	for _, s := range Scenarios() {
		if s.Name() == name {
			return s
		}
	}
	return nil
}
