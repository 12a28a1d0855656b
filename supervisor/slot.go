package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-gw/shoal/acceptor"
)

type role string

const (
	roleWorker  role = "worker"
	roleService role = "service"
)

// upTimeout bounds the wait for a replacement worker's first life record.
const upTimeout = 15 * time.Second

// slot is one child the supervisor keeps running: worker i, or process i
// of a service.
// Its keep goroutine owns the process; other goroutines talk to it through
// channels.
type slot struct {
	s     *Supervisor
	role  role
	index int    // worker number, or the process's number among its service's
	name  string // service name
	ord   int    // the slot's position among all slots of its role: unique, so it names files

	replaceCh chan chan error
	stopCh    chan struct{}
	stopOnce  sync.Once
	done      chan struct{}
	stopErr   error

	mu       sync.Mutex
	gen      int
	cur      *proc
	restarts int
	// ln is a worker slot's listening socket, which every process of the
	// slot inherits: a worker that replaces another takes over the very
	// socket, so the connections waiting in its queue are accepted by the
	// new worker instead of reset with the old one. Opened before a
	// launch, closed when a worker dies (its queue would wait for the
	// restart) and when serve stops.
	ln *acceptor.Listener
}

// proc is one process of a slot.
type proc struct {
	cmd     *exec.Cmd
	shard   string
	debug   string // the child's debug socket, "" without one
	started time.Time
	exited  chan struct{}
	err     error // from Wait, valid once exited is closed
}

func (s *Supervisor) newSlot(r role, ord, index int, name string) *slot {
	return &slot{
		s:         s,
		role:      r,
		ord:       ord,
		index:     index,
		name:      name,
		replaceCh: make(chan chan error),
		stopCh:    make(chan struct{}),
		done:      make(chan struct{}),
	}
}

func (sl *slot) label() string {
	if sl.role == roleWorker {
		return "worker " + strconv.Itoa(sl.index)
	}
	return "service " + sl.name + " " + strconv.Itoa(sl.index)
}

// launch starts a new process for the slot.
func (sl *slot) launch() (*proc, error) {
	s := sl.s
	sl.mu.Lock()
	sl.gen++
	gen := sl.gen
	sl.mu.Unlock()
	p := &proc{exited: make(chan struct{})}
	var args []string
	if sl.role == roleWorker {
		p.shard = fmt.Sprintf("%s-%d-%d", s.cfg.ShardPrefix, sl.index, gen)
		args = []string{"worker",
			"--shard", p.shard,
			"--addr", s.addr,
			"--nats", s.natsURL,
			"--prefix", s.subj.Prefix,
			"--services", strings.Join(s.cfg.Routes, ","),
			"--drain-timeout", s.cfg.DrainTimeout.String(),
		}
		args = append(args, s.cfg.WorkerArgs...)
	} else {
		args = []string{"service", sl.name, "--nats", s.natsURL, "--prefix", s.subj.Prefix}
		args = append(args, s.cfg.ServiceArgs...)
	}
	if s.debugDir != "" {
		p.debug = filepath.Join(s.debugDir, fmt.Sprintf("%s-%d-%d.sock", sl.role, sl.ord, gen))
		args = append(args, "--debug-socket", p.debug)
	}
	cmd := exec.Command(s.cfg.Exe, args...)
	if s.cfg.Procs > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(s.cfg.Procs))
	}
	cmd.Stdout = s.cfg.Output
	cmd.Stderr = s.cfg.Output
	if sl.role == roleWorker {
		f, err := sl.listenerFile()
		if err != nil {
			return nil, fmt.Errorf("supervisor: %s: %w", sl.label(), err)
		}
		// The child's copy; ours goes once it has its own.
		defer f.Close()
		// ExtraFiles[0] is descriptor 3 in the child.
		cmd.ExtraFiles = []*os.File{f}
		cmd.Args = append(cmd.Args, "--listen-fd", "3")
	}
	p.cmd = cmd
	if err := s.spawn.start(cmd); err != nil {
		return nil, fmt.Errorf("supervisor: start %s: %w", sl.label(), err)
	}
	p.started = time.Now()
	go func() {
		p.err = cmd.Wait()
		if p.debug != "" {
			// A child that was killed leaves its socket behind.
			_ = os.Remove(p.debug)
		}
		close(p.exited)
	}()
	s.log.Info("started", "child", sl.label(), "pid", cmd.Process.Pid, "shard", p.shard)
	return p, nil
}

// listenerFile opens the slot's listening socket if it has none and
// returns a copy of it for a child to inherit.
func (sl *slot) listenerFile() (*os.File, error) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.ln == nil {
		ln, err := acceptor.Listen(sl.s.addr, 0)
		if err != nil {
			return nil, err
		}
		sl.ln = ln
	}
	return sl.ln.File()
}

// closeListener closes the supervisor's copy of the slot's socket; the
// socket itself closes with the last worker holding it.
func (sl *slot) closeListener() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.ln != nil {
		_ = sl.ln.Close()
		sl.ln = nil
	}
}

// keep runs the slot until it is stopped: it restarts a process that dies,
// with a backoff that grows while the process keeps dying young.
func (sl *slot) keep() {
	defer sl.s.wg.Done()
	defer close(sl.done)
	backoff := restartBackoffMin
	for {
		p, err := sl.launch()
		if err != nil {
			sl.s.log.Error("start failed", "child", sl.label(), "err", err)
		} else {
			sl.setCur(p)
			if stop := sl.serve(p); stop {
				return
			}
			// Connections hashed to a dead worker's socket would wait for
			// its restart; without the socket the kernel sends them to
			// the other workers meanwhile.
			sl.closeListener()
			if time.Since(p.started) > stableAfter {
				backoff = restartBackoffMin
			}
			sl.mu.Lock()
			sl.restarts++
			sl.mu.Unlock()
			sl.s.log.Warn("child died, restarting", "child", sl.label(), "pid", p.cmd.Process.Pid, "status", exitStatus(p.err), "in", backoff)
		}
		select {
		case <-time.After(backoff):
		case <-sl.stopCh:
			return
		}
		backoff = min(backoff*2, restartBackoffMax)
	}
}

// serve watches the running process p until it dies (false) or the slot is
// stopped (true), replacing it when asked.
func (sl *slot) serve(p *proc) (stopped bool) {
	for {
		select {
		case <-p.exited:
			return false
		case reply := <-sl.replaceCh:
			np, err := sl.replaceWith(p)
			if err == nil {
				p = np
			}
			reply <- err
		case <-sl.stopCh:
			sl.stopErr = sl.terminate(p, syscall.SIGTERM, sl.s.cfg.DrainTimeout+5*time.Second)
			return true
		}
	}
}

// replaceWith starts a successor of p, waits until it is up, then drains p.
func (sl *slot) replaceWith(p *proc) (*proc, error) {
	np, err := sl.launch()
	if err != nil {
		return nil, err
	}
	if sl.role == roleWorker {
		select {
		case <-sl.s.waitUp(np.shard):
		case <-np.exited:
			return nil, fmt.Errorf("supervisor: replacement of %s died: %s", sl.label(), exitStatus(np.err))
		case <-time.After(upTimeout):
			_ = sl.terminate(np, syscall.SIGTERM, time.Second)
			return nil, fmt.Errorf("supervisor: replacement of %s not up within %s", sl.label(), upTimeout)
		}
	}
	sl.setCur(np)
	// A worker replaced tells its clients it restarts (1012), so that they
	// reconnect at once, to its successor or another worker of the port.
	sig := syscall.SIGTERM
	if sl.role == roleWorker {
		sig = syscall.SIGUSR2
	}
	if err := sl.terminate(p, sig, sl.s.cfg.DrainTimeout+5*time.Second); err != nil {
		sl.s.log.Warn("old process did not stop cleanly", "child", sl.label(), "err", err)
	}
	return np, nil
}

// terminate asks p to stop with sig (SIGTERM, or SIGUSR2: drain for a
// restart) and kills it if it has not exited within grace. It returns an
// error unless p exited with status 0.
func (sl *slot) terminate(p *proc, sig syscall.Signal, grace time.Duration) error {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("supervisor: %s (pid %d) killed after %s", sl.label(), p.cmd.Process.Pid, grace)
	}
	if p.err != nil {
		return fmt.Errorf("supervisor: %s (pid %d) exited: %s", sl.label(), p.cmd.Process.Pid, exitStatus(p.err))
	}
	return nil
}

// replace asks the keep goroutine to replace the process.
func (sl *slot) replace(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case sl.replaceCh <- reply:
	case <-sl.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop ends the slot and waits for its process.
func (sl *slot) stop(time.Duration) error {
	sl.stopOnce.Do(func() { close(sl.stopCh) })
	<-sl.done
	return sl.stopErr
}

func (sl *slot) setCur(p *proc) {
	sl.mu.Lock()
	sl.cur = p
	sl.mu.Unlock()
}

// current is the slot's latest process, nil before the first start.
func (sl *slot) current() *proc {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.cur
}

func exitStatus(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
