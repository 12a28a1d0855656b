package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// WorkerRuntime is what a run did to one shoal worker process: its open
// files with the connections held, and its Go heap and garbage collector
// at the end, read from the runtime's MemStats in the worker's heap
// profile on the admin endpoint (/debug/pprof/worker/<slot>/heap?debug=1).
// These are the figures behind the choice of a worker count: the
// open-files limit binds per process, and a garbage collection's work
// grows with its process's heap.
type WorkerRuntime struct {
	PID  int `json:"pid"`
	Slot int `json:"slot"`
	// FDs is the worker's open files at the "measure" point.
	FDs int `json:"fds"`
	// HeapSysKiB is the heap memory the worker obtained from the OS,
	// which does not shrink back within a run: its high-water mark.
	HeapSysKiB   int64  `json:"heap_sys_kib"`
	HeapInuseKiB int64  `json:"heap_inuse_kib"`
	NumGC        uint32 `json:"num_gc"`
	// PauseMaxUs and PauseTotalUs cover the last 256 collections (the
	// runtime keeps no more), so the whole life of a fresh worker in a
	// short run.
	PauseMaxUs   int64   `json:"pause_max_us"`
	PauseTotalUs int64   `json:"pause_total_us"`
	GCCPU        float64 `json:"gc_cpu_fraction"`
	// Error says why the figures are missing.
	Error string `json:"error,omitempty"`
}

// countFDs is the number of open files of pid.
func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, fmt.Errorf("bench: open files of %d: %w", pid, err)
	}
	return len(ents), nil
}

// workerMemStats fetches the MemStats of worker slot from a shoal admin
// endpoint and fills w's heap and GC figures.
func workerMemStats(ctx context.Context, admin string, w *WorkerRuntime) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := adminURL(admin) + "/debug/pprof/worker/" + strconv.Itoa(w.Slot) + "/heap?debug=1"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bench: worker %d heap: %w", w.Slot, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: worker %d heap: %w", w.Slot, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: worker %d heap: %s", w.Slot, resp.Status)
	}
	return parseMemStats(resp.Body, w)
}

// parseMemStats reads the "# Name = value" lines runtime/pprof writes at
// the end of a debug=1 heap profile.
func parseMemStats(r io.Reader, w *WorkerRuntime) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	found := false
	for sc.Scan() {
		name, val, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok {
			continue
		}
		num := func() int64 { n, _ := strconv.ParseInt(val, 10, 64); return n }
		switch name {
		case "HeapSys":
			w.HeapSysKiB, found = num()/1024, true
		case "HeapInuse":
			w.HeapInuseKiB = num() / 1024
		case "NumGC":
			w.NumGC = uint32(num())
		case "GCCPUFraction":
			w.GCCPU, _ = strconv.ParseFloat(val, 64)
		case "PauseNs":
			w.PauseMaxUs, w.PauseTotalUs = 0, 0
			for _, f := range strings.Fields(strings.Trim(val, "[]")) {
				ns, _ := strconv.ParseInt(f, 10, 64)
				w.PauseTotalUs += ns / 1000
				w.PauseMaxUs = max(w.PauseMaxUs, ns/1000)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("bench: worker %d heap: %w", w.Slot, err)
	}
	if !found {
		return fmt.Errorf("bench: worker %d heap: no MemStats in the profile", w.Slot)
	}
	return nil
}

// adminURL is admin as an http:// URL without a trailing slash.
func adminURL(admin string) string {
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	return strings.TrimSuffix(admin, "/")
}
