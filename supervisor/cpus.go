package supervisor

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
)

// CPUs is the processor capacity available to this process.
type CPUs struct {
	// Affinity is the number of CPUs the process may run on (its
	// sched_getaffinity mask, as runtime.NumCPU reports it).
	Affinity int
	// Quota is the CPU time its cgroups allow, in CPUs (cpu.max in cgroup
	// v2, cpu.cfs_quota_us over cpu.cfs_period_us in v1, the smallest
	// along the path to the root); 0 when there is no limit.
	Quota float64
	// QuotaFrom names the file the quota came from; empty without one.
	QuotaFrom string
}

// AvailableCPUs reads the capacity of this process: its affinity, and the
// CPU limit of its cgroups when it runs in a container or a systemd unit
// with CPUQuota=. An unreadable cgroup counts as no limit.
func AvailableCPUs() CPUs {
	c := CPUs{Affinity: runtime.NumCPU()}
	c.Quota, c.QuotaFrom, _ = cgroupQuota("/")
	return c
}

// Workers is the worker count that --workers auto picks: one per CPU the
// process can use, that is its affinity, capped by its cgroup quota
// rounded up (a quota of 2.5 CPUs is 3 workers: the half CPU is time a
// worker can use, as Go's own GOMAXPROCS counts it), and at least one.
func (c CPUs) Workers() int {
	n := c.Affinity
	if c.Quota > 0 {
		n = min(n, int(math.Ceil(c.Quota-1e-9)))
	}
	return max(n, 1)
}

// ProcsShare is the GOMAXPROCS of each process of a host running workers
// worker processes: the CPUs the host offers (as Workers counts them)
// divided among the workers, at least one. Go's default gives every
// process all the CPUs; with a worker per CPU, a service and NATS beside
// them, each process then keeps threads spinning for work and wakes
// others across CPUs at every goroutine handoff, and on a 2-CPU host that
// cost more than half the CPU an echo took (docs/tuning.md).
func ProcsShare(c CPUs, workers int) int {
	return max(1, c.Workers()/max(workers, 1))
}

// String describes the capacity for the log.
func (c CPUs) String() string {
	if c.Quota <= 0 {
		return fmt.Sprintf("%d CPUs, no cgroup limit", c.Affinity)
	}
	return fmt.Sprintf("%d CPUs, cgroup limit %s CPUs (%s)", c.Affinity, strconv.FormatFloat(c.Quota, 'f', -1, 64), c.QuotaFrom)
}
