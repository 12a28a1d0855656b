//go:build race

package peers

// raceEnabled makes the peers under test carry the race detector too.
const raceEnabled = true
