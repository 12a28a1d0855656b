package main

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/supervisor"
)

// echoProcs maps slot to the live echo service processes /procs lists.
func (f *fleet) echoProcs() map[int]supervisor.Proc {
	out := make(map[int]supervisor.Proc)
	for _, p := range f.procs() {
		if p.Role == "service" && p.Service == "echo" {
			out[p.Slot] = p
		}
	}
	return out
}

// written is the number of bytes pid has written with write syscalls
// (wchar in /proc/PID/io). A service writes to the bus only to answer
// events, so its growth shows which processes handled events.
func written(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no wchar in /proc/%d/io", pid)
	return 0
}

// echoLoad sends big messages over fresh connections and returns how many
// bytes each echo process (by pid) wrote meanwhile.
func (f *fleet) echoLoad(t *testing.T, procs map[int]supervisor.Proc) map[int]int64 {
	t.Helper()
	before := make(map[int]int64)
	for _, p := range procs {
		before[p.PID] = written(t, p.PID)
	}
	msg := bytes.Repeat([]byte("e"), 256<<10)
	for i := range 60 {
		c := dial(t, f.ws+"/ws/echo")
		if err := c.echo(ws.OpBinary, msg); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		c.c.Close()
	}
	delta := make(map[int]int64)
	for pid, n := range before {
		delta[pid] = written(t, pid) - n
	}
	return delta
}

// TestServeServiceInstances runs `--services echo=3`: three echo processes
// in one queue group, each handling a share of the events, each restarted
// on its own when it dies.
func TestServeServiceInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "1", "--services", "echo=3")
	procs := f.echoProcs()
	if len(procs) != 3 {
		t.Fatalf("echo processes %v, want slots 0, 1 and 2", procs)
	}
	for slot := range 3 {
		if _, ok := procs[slot]; !ok {
			t.Fatalf("no echo process in slot %d: %v", slot, procs)
		}
	}
	// 60 messages of 256 KiB: NATS picks a member of the queue group at
	// random for each, so every process answers some; that one answers
	// fewer than 4 has odds below one in a million. 4 messages' worth is
	// far above anything a process writes besides answers.
	const share = 4 * 256 << 10
	delta := f.echoLoad(t, procs)
	var total int64
	for _, p := range procs {
		if delta[p.PID] < share {
			t.Errorf("echo process %d (slot %d) wrote %d bytes while 60 messages were echoed: it handled none or almost none", p.PID, p.Slot, delta[p.PID])
		}
		total += delta[p.PID]
	}
	if total < 60*256<<10 {
		t.Errorf("echo processes wrote %d bytes in all for 15 MiB of echoes", total)
	}
	t.Logf("bytes written per echo process: %v", delta)

	// kill -9 one: it alone is restarted, in its slot.
	victim := procs[1]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now map[int]supervisor.Proc
	waitUntil(t, "the killed echo process to be replaced", func() bool {
		now = f.echoProcs()
		p, ok := now[1]
		return len(now) == 3 && ok && p.PID != victim.PID
	})
	if now[1].Restarts != 1 {
		t.Errorf("slot 1 restarts %d, want 1", now[1].Restarts)
	}
	for _, slot := range []int{0, 2} {
		if now[slot].PID != procs[slot].PID || now[slot].Restarts != 0 {
			t.Errorf("slot %d: %+v, want the untouched %+v", slot, now[slot], procs[slot])
		}
	}
	if m := f.metrics(); !strings.Contains(m, `shoal_child_restarts_total{role="service",service="echo",slot="1"} 1`) {
		t.Errorf("/metrics does not count the restart of echo slot 1:\n%s", grepLines(m, "shoal_child_restarts_total"))
	}
	// The replacement joined the queue group: it handles events too. It
	// subscribes shortly after it starts, so allow a few rounds.
	waitUntil(t, "the replacement to handle events", func() bool {
		return f.echoLoad(t, now)[now[1].PID] >= share
	})

	f.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-f.exit; err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// grepLines returns the lines of text containing s, sorted.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
