package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Host describes the machine a run was on.
type Host struct {
	CPUModel string `json:"cpu_model"`
	Cores    int    `json:"cores"`
	Kernel   string `json:"kernel"`
	Hostname string `json:"hostname"`
}

// ThisHost reads the CPU model from /proc/cpuinfo and the kernel from uname.
func ThisHost() Host {
	h := Host{Cores: runtime.NumCPU()}
	h.Hostname, _ = os.Hostname()
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return h
}

// usableCPUs is the number of CPUs this process may run on.
func usableCPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil && set.Count() > 0 {
		return set.Count()
	}
	return runtime.NumCPU()
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the process's user plus system CPU time from /proc/self/stat.
func cpuTime() time.Duration {
	d, _ := statCPU("/proc/self/stat")
	return d
}

// procCPU is the user plus system CPU time of each of pids.
func procCPU(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := statCPU("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
		}
		out[i] = d
	}
	return out, nil
}

// statCPU reads utime plus stime from a /proc stat file.
func statCPU(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which may contain spaces, in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name in stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// cpuMeter turns CPU time into a share of the usable CPUs.
type cpuMeter struct {
	cpus      int
	startWall time.Time
	startCPU  time.Duration
	lastWall  time.Time
	lastCPU   time.Duration
}

func newCPUMeter() *cpuMeter {
	now, c := time.Now(), cpuTime()
	return &cpuMeter{cpus: usableCPUs(), startWall: now, startCPU: c, lastWall: now, lastCPU: c}
}

// tick returns the share since the last tick.
func (m *cpuMeter) tick() float64 {
	now, c := time.Now(), cpuTime()
	share := m.share(c-m.lastCPU, now.Sub(m.lastWall))
	m.lastWall, m.lastCPU = now, c
	return share
}

// total returns the CPU time and share since the start.
func (m *cpuMeter) total() (time.Duration, float64) {
	c := cpuTime() - m.startCPU
	return c, m.share(c, time.Since(m.startWall))
}

func (m *cpuMeter) share(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(cpu) / float64(wall) / float64(m.cpus)
}

// rssKiB reads VmRSS of each of pids from /proc/<pid>/status.
func rssKiB(pids []int) ([]int64, error) {
	out := make([]int64, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return nil, fmt.Errorf("bench: server pid %d: %w", pid, err)
		}
		found := false
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("bench: server pid %d: VmRSS %q", pid, v)
				}
				out[i] = n
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("bench: server pid %d: no VmRSS (a zombie?)", pid)
		}
	}
	return out, nil
}

// AdminProc is one entry of the admin endpoint's /procs list.
type AdminProc struct {
	PID  int    `json:"pid"`
	Role string `json:"role"`
	Slot int    `json:"slot"`
}

// adminProcs fetches the process list of a shoal admin endpoint.
func adminProcs(ctx context.Context, admin string) ([]AdminProc, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL(admin)+"/procs", nil)
	if err != nil {
		return nil, fmt.Errorf("bench: admin: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: admin: /procs answered %s", resp.Status)
	}
	var list []AdminProc
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("bench: admin: /procs: %w", err)
	}
	return list, nil
}
