package bench

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
)

// The MemStats lines of a real heap profile of this process.
func TestParseMemStats(t *testing.T) {
	runtime.GC()
	var b bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&b, 1); err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var w WorkerRuntime
	if err := parseMemStats(&b, &w); err != nil {
		t.Fatal(err)
	}
	if w.NumGC == 0 || w.NumGC > ms.NumGC || w.HeapSysKiB == 0 || w.HeapInuseKiB == 0 || w.HeapInuseKiB > w.HeapSysKiB {
		t.Errorf("parsed %+v; the runtime says %d GCs, heap sys %d KiB", w, ms.NumGC, ms.HeapSys/1024)
	}
	if w.PauseTotalUs < w.PauseMaxUs || w.PauseMaxUs <= 0 {
		t.Errorf("pauses: max %dµs total %dµs", w.PauseMaxUs, w.PauseTotalUs)
	}
	if err := parseMemStats(strings.NewReader("heap profile: 0: 0 [0: 0] @ heap/1048576\n"), &w); err == nil {
		t.Error("a profile without MemStats: want an error")
	}
}
