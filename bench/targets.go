package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Target names that compare accepts besides the peers.
const shoalTarget = "shoal"

// PeerNames returns the peer servers built from bench/peers, in the
// order compare runs them by default.
func PeerNames() []string { return []string{centrifugoTarget, "gorilla", "nbio", "gws"} }

// isPeer reports whether name is one of PeerNames.
func isPeer(name string) bool { return slices.Contains(PeerNames(), name) }

// targetProto is the protocol the target called name speaks.
func targetProto(name string) string {
	if name == centrifugoTarget {
		return ProtoCentrifugo
	}
	return ProtoBench
}

// peerBuild says where a peer is built from: the module directory below
// bench/peers and the package to build there. Centrifugo is the server's
// own main package, required as a tool by a module of its own.
func peerBuild(name string) (dir, pkg string) {
	if name == centrifugoTarget {
		return centrifugoTarget, "github.com/centrifugal/centrifugo/v6"
	}
	return ".", "./" + name
}

// How long a target may take to come up, and to go down after SIGTERM
// before it is killed. shoal serve waits up to 30s for its workers before
// it announces itself, so startup gets more.
const (
	targetStartTimeout = 60 * time.Second
	targetStopTimeout  = 15 * time.Second
	// targetPipeDelay bounds the wait for a target's output pipes once it
	// exited: shoal's worker processes inherit its stderr, and a killed
	// supervisor may leave them holding it open.
	targetPipeDelay = 5 * time.Second
	// targetTailLines is how much of a target's output is kept to explain
	// a failure.
	targetTailLines = 40
)

// Target is a server the tool started on a free loopback port, and stops.
type Target struct {
	// Name is the target's name: shoal or one of PeerNames.
	Name string
	// Proto is the protocol it speaks, one of Protocols.
	Proto string
	// Args are the scenario flags that speak to it (--proto and what that
	// protocol needs).
	Args []string
	// URL is the base WebSocket URL, ws://127.0.0.1:PORT, without a path.
	URL string
	// Admin is shoal's admin endpoint (http://host:port); empty for peers.
	Admin string
	// PID is the process the tool started. For a peer it is the server.
	PID int

	cmd     *exec.Cmd
	tail    *tailLog
	ready   chan serving
	exited  chan struct{}
	waitErr error // set before exited is closed
	tmpDir  string
	workDir string   // the process's working directory; empty: the tool's
	env     []string // variables added to the tool's for the process

	stopOnce sync.Once
	stopErr  error
}

// StartShoal starts `shoal serve` from the binary exe with the given
// number of workers, serving echo and fanout with the per-client limits
// off, and waits until it serves.
func StartShoal(ctx context.Context, exe string, workers int) (*Target, error) {
	return StartShoalConfig(ctx, exe, ShoalConfig{Workers: workers})
}

// ShoalConfig is what StartShoalConfig runs `shoal serve` with.
type ShoalConfig struct {
	// Workers is --workers; it must be positive.
	Workers int
	// Services is --services; default "echo,fanout", the bench protocol's.
	Services string
	// Env are variables (NAME=value) added to the tool's environment for
	// the server: the settings of its services, such as
	// SHOAL_SERVICE_CHAT_BCRYPT_COST=4.
	Env []string
}

// StartShoalConfig starts `shoal serve` from the binary exe as cfg says,
// with the per-client limits off, and waits until it serves.
func StartShoalConfig(ctx context.Context, exe string, cfg ShoalConfig) (*Target, error) {
	workers, services := cfg.Workers, cfg.Services
	if services == "" {
		services = "echo,fanout"
	}
	if workers <= 0 {
		return nil, fmt.Errorf("%w: shoal: --workers must be positive", ErrUsage)
	}
	dir, err := os.MkdirTemp("", "shoal-bench-data-")
	if err != nil {
		return nil, fmt.Errorf("%w: shoal: %w", ErrTarget, err)
	}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--workers", strconv.Itoa(workers), "--services", services, "--admin", "127.0.0.1:0",
		"--data", dir, "--log-format", "json", "--max-msg-rate", "-1", "--max-conns-per-ip", "-1"}
	t := &Target{Name: shoalTarget, Proto: ProtoBench, tmpDir: dir, env: cfg.Env}
	err = t.start(ctx, exe, args, func(line []byte) (serving, bool) {
		var rec struct{ Msg, WS, Admin string }
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "shoal serving" {
			return serving{}, false
		}
		return serving{url: strings.TrimSuffix(rec.WS, "/ws/<service>"), admin: rec.Admin}, true
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := t.await(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// StartPeer starts the peer binary bin (one of PeerNames, built by
// BuildPeers) on a free loopback port and waits until it listens.
func StartPeer(ctx context.Context, name, bin string) (*Target, error) {
	t := &Target{Name: name, Proto: ProtoBench}
	err := t.start(ctx, bin, []string{"-addr", "127.0.0.1:0"}, func(line []byte) (serving, bool) {
		addr, ok := bytes.CutPrefix(line, []byte("listening "))
		if !ok {
			return serving{}, false
		}
		return serving{url: "ws://" + strings.TrimSpace(string(addr))}, true
	})
	if err != nil {
		return nil, err
	}
	if err := t.await(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// serving is what a target announces once it serves.
type serving struct{ url, admin string }

// start runs the process, passing every output line to ready until one
// says the target serves.
func (t *Target) start(ctx context.Context, exe string, args []string, ready func([]byte) (serving, bool)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.tail = &tailLog{max: targetTailLines}
	t.ready = make(chan serving, 1)
	onLine := func(line []byte) {
		if s, ok := ready(line); ok {
			select {
			case t.ready <- s:
			default:
			}
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = t.workDir
	if t.env != nil {
		cmd.Env = append(os.Environ(), t.env...)
	}
	// A group of its own keeps the terminal's ^C away from the target (the
	// tool stops it in order), and lets a kill reach shoal's workers too.
	// Pdeathsig stops it should the tool die without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = &lineWriter{tail: t.tail, onLine: onLine}
	cmd.Stderr = &lineWriter{tail: t.tail, onLine: onLine}
	cmd.WaitDelay = targetPipeDelay
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrTarget, t.Name, err)
	}
	t.cmd, t.PID, t.exited = cmd, cmd.Process.Pid, make(chan struct{})
	go func() {
		t.waitErr = cmd.Wait()
		close(t.exited)
	}()
	return nil
}

// await waits until the target serves; on failure it stops the target and
// returns why.
func (t *Target) await(ctx context.Context) error {
	timer := time.NewTimer(targetStartTimeout)
	defer timer.Stop()
	var err error
	select {
	case s := <-t.ready:
		t.URL, t.Admin = s.url, s.admin
		return nil
	case <-t.exited:
		err = fmt.Errorf("%w: %s exited before it served (%v)%s", ErrTarget, t.Name, t.waitErr, t.tail.String())
	case <-timer.C:
		err = fmt.Errorf("%w: %s did not serve within %s%s", ErrTarget, t.Name, targetStartTimeout, t.tail.String())
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = t.Stop()
	return err
}

// Stop sends SIGTERM, waits up to 15 seconds for the target to exit, then
// kills its process group. It returns an error when the target did not
// exit cleanly. Calling it twice is safe.
func (t *Target) Stop() error {
	t.stopOnce.Do(func() {
		defer func() {
			if t.tmpDir != "" {
				os.RemoveAll(t.tmpDir)
			}
		}()
		if t.cmd == nil {
			return
		}
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(targetStopTimeout)
		defer timer.Stop()
		select {
		case <-t.exited:
		case <-timer.C:
			_ = syscall.Kill(-t.PID, syscall.SIGKILL)
			<-t.exited
			t.stopErr = fmt.Errorf("%w: %s did not stop within %s of SIGTERM and was killed%s", ErrTarget, t.Name, targetStopTimeout, t.tail.String())
			return
		}
		// What the target left behind in its group goes with it.
		_ = syscall.Kill(-t.PID, syscall.SIGKILL)
		if t.waitErr != nil && !errors.Is(t.waitErr, exec.ErrWaitDelay) {
			t.stopErr = fmt.Errorf("%w: %s: %v%s", ErrTarget, t.Name, t.waitErr, t.tail.String())
		}
	})
	return t.stopErr
}

// lineWriter splits a process's output into lines for onLine and tail.
// exec calls Write from one goroutine per stream.
type lineWriter struct {
	tail   *tailLog
	onLine func([]byte)
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := w.buf[:i]
		w.tail.add(string(line))
		w.onLine(line)
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 {
		// A runaway line without newline: keep the tail bounded.
		w.tail.add(string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// tailLog keeps the last lines of a target's output.
type tailLog struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (l *tailLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
}

// String is the kept output, indented under a heading, or "".
func (l *tailLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return ""
	}
	return "; its last output:\n    " + strings.Join(l.lines, "\n    ")
}

// FindPeersDir looks for the bench/peers module from dir upwards: the
// first ancestor (dir included) holding bench/peers/go.mod, or dir itself
// when it is that module.
func FindPeersDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPeers, err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		for _, cand := range []string{filepath.Join(d, "bench", "peers"), d} {
			if isPeersModule(cand) {
				return cand, nil
			}
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("%w: no bench/peers/go.mod in %s or any directory above it; run from the shoal source tree or pass --peers-dir", ErrPeers, abs)
}

// isPeersModule reports whether dir is the bench/peers module.
func isPeersModule(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.HasSuffix(strings.TrimSpace(first), "/bench/peers")
}

// BuildPeers builds the named peers of the module in peersDir (and, for
// centrifugo, of its own module below it) into binDir with the go tool and
// returns each binary's path by name. The go tool's build cache keeps the
// compiled packages, so only the first build on a machine is slow
// (Centrifugo's: about two minutes on two cores).
func BuildPeers(ctx context.Context, peersDir, binDir string, names []string) (map[string]string, error) {
	if !isPeersModule(peersDir) {
		return nil, fmt.Errorf("%w: %s is not the bench/peers module (no go.mod naming it)", ErrPeers, peersDir)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("%w: the go tool is not on PATH; it is needed to build the peer servers (%v)", ErrPeers, err)
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		bin := filepath.Join(binDir, name)
		sub, pkg := peerBuild(name)
		dir := filepath.Join(peersDir, sub)
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, pkg)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%w: go build %s in %s: %v\n%s", ErrPeers, pkg, dir, err, b)
		}
		out[name] = bin
	}
	return out, nil
}
