//go:build linux

package supervisor

import (
	"os/exec"
	"runtime"
	"syscall"
)

// spawner starts child processes from one OS thread that lives as long as
// the supervisor. The parent-death signal is tied to the thread that
// forked the child, not to the process: were the fork done from a thread
// the Go runtime later retires, the children would be signalled while the
// supervisor still runs.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func newSpawner() *spawner {
	sp := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go sp.loop()
	return sp
}

func (sp *spawner) loop() {
	runtime.LockOSThread()
	// Never unlocked: when this goroutine returns the thread exits with it,
	// which is only after every child has been waited for.
	defer close(sp.done)
	for r := range sp.reqs {
		r.err <- r.cmd.Start()
	}
}

// start starts cmd with SIGTERM as its parent-death signal: a child whose
// supervisor vanished drains and exits like on an ordinary shutdown.
func (sp *spawner) start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	sp.reqs <- r
	return <-r.err
}

func (sp *spawner) close() {
	close(sp.reqs)
	<-sp.done
}
