package bench

import (
	"context"
	"strconv"
)

// Sweep runs `shoal bench sweep`: cfg.Args are the arguments after
// "sweep". It runs one scenario against `shoal serve --workers N` for each
// N of --workers.
func Sweep(ctx context.Context, cfg Config) (*Comparison, error) {
	return multi(ctx, cfg, "sweep")
}

// sweepPlan is one shoal run per worker count, the first the baseline.
func sweepPlan(counts []int) ([]runPlan, string) {
	plan := make([]runPlan, 0, len(counts))
	for _, n := range counts {
		plan = append(plan, runPlan{name: "workers=" + strconv.Itoa(n), server: shoalTarget, workers: n})
	}
	return plan, plan[0].name
}
