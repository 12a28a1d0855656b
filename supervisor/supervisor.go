package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// Defaults for the zero values of Config.
const (
	DefaultNATSListen   = "127.0.0.1:4222"
	DefaultDrainTimeout = 10 * time.Second
	// restartBackoffMin and restartBackoffMax bound the wait before a dead
	// child is started again; the wait doubles while it keeps dying young.
	restartBackoffMin = 100 * time.Millisecond
	restartBackoffMax = 5 * time.Second
	// stableAfter is how long a child must live for its backoff to reset.
	stableAfter = 10 * time.Second
)

// Config configures a Supervisor. Addr is required.
type Config struct {
	// Exe is the binary the children run (default: this process's own).
	Exe string
	// Addr is the gateway address every worker listens on. Port 0 picks
	// a free port once, for all workers.
	Addr string
	// Workers is the number of worker processes (default: one per CPU
	// available to the process, cgroup limits respected; see
	// CPUs.Workers).
	Workers int
	// Procs is the GOMAXPROCS each worker and service process gets: 0
	// picks the CPUs available divided among the workers, at least one
	// (see ProcsShare), unless GOMAXPROCS is set in the environment, which
	// the children then inherit; -1 leaves them Go's default.
	Procs int
	// DataDir holds the embedded NATS server's JetStream data.
	DataDir string
	// NATS is the URL of an external NATS server or cluster; empty starts
	// an embedded server.
	NATS string
	// NATSListen is the embedded server's address (default
	// 127.0.0.1:4222; port 0 picks a free one).
	NATSListen string
	// NATSMaxPayload is the embedded server's max_payload (default 8 MiB).
	NATSMaxPayload int32
	// Admin is the admin endpoint's address (/metrics, /procs, /healthz,
	// /debug/pprof/); empty: none.
	Admin string
	// AdminToken, when set, is the bearer token every admin request but
	// /healthz must carry.
	AdminToken string
	// TLS says the workers serve TLS on Addr (wss://), for the address
	// announced when serving.
	TLS bool
	// Services are the bundled services to run.
	Services []string
	// Instances is the number of processes of each service in Services
	// (default 1). The processes of one service share its queue group, so
	// NATS spreads the events across them; each is restarted on its own.
	Instances map[string]int
	// Routes are the service names clients may reach at /ws/<name>
	// (default: Services).
	Routes []string
	// Prefix is the subject prefix (default "shoal").
	Prefix string
	// ShardPrefix starts every shard id (default: the host name).
	ShardPrefix string
	// WorkerArgs are extra flags for every worker; ServiceArgs for every
	// service.
	WorkerArgs, ServiceArgs []string
	// DrainTimeout bounds a worker's drain (default 10s); a child still
	// running this long after it (plus a grace) is killed.
	DrainTimeout time.Duration
	// Output receives the children's standard output and error (default:
	// this process's standard error).
	Output io.Writer

	Logger *slog.Logger
}

// Supervisor runs and watches shoal's processes.
type Supervisor struct {
	cfg   Config
	log   *slog.Logger
	subj  bus.Subjects
	spawn *spawner

	embedded *bus.Embedded
	natsURL  string
	nc       *nats.Conn
	reserved int // fd holding a port picked with :0
	addr     string
	admin    *http.Server
	adminLn  net.Listener
	debugDir string // children's debug sockets; "" without an admin endpoint
	debugTmp bool   // debugDir is a temporary directory of ours

	mu      sync.Mutex
	workers []*slot
	svcs    []*slot
	life    map[string]bus.Life // latest record per shard id
	lifeSub *nats.Subscription
	waiters map[string]chan struct{} // shard id -> closed when it says up
	stopped bool
	wg      sync.WaitGroup
}

// GOMAXPROCS is the GOMAXPROCS the children get, 0 or less when they keep
// Go's default. The process running the supervisor, which holds the
// embedded NATS server, does best with the same share.
func (s *Supervisor) GOMAXPROCS() int { return s.cfg.Procs }

// New checks cfg; Run starts everything.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%w: Addr is required", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Exe == "" {
		exe, err := invokedPath()
		if err != nil {
			return nil, fmt.Errorf("%w: own executable: %v", ErrConfig, err)
		}
		cfg.Exe = exe
	}
	if cfg.Workers <= 0 {
		cpus := AvailableCPUs()
		cfg.Workers = cpus.Workers()
		cfg.Logger.Info("workers: one per CPU", "workers", cfg.Workers, "cpus", cpus.String())
	}
	if cfg.Procs == 0 && os.Getenv("GOMAXPROCS") == "" {
		cfg.Procs = ProcsShare(AvailableCPUs(), cfg.Workers)
	}
	if cfg.NATSListen == "" {
		cfg.NATSListen = DefaultNATSListen
	}
	if cfg.NATSMaxPayload <= 0 {
		cfg.NATSMaxPayload = 8 << 20
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Routes == nil {
		cfg.Routes = cfg.Services
	}
	for _, name := range append(append([]string(nil), cfg.Services...), cfg.Routes...) {
		if err := bus.ValidServiceName(name); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	seen := make(map[string]bool, len(cfg.Services))
	for _, name := range cfg.Services {
		if seen[name] {
			return nil, fmt.Errorf("%w: service %q named twice", ErrConfig, name)
		}
		seen[name] = true
	}
	for name, n := range cfg.Instances {
		if !seen[name] {
			return nil, fmt.Errorf("%w: instances of %q, which is not among the services", ErrConfig, name)
		}
		if n < 1 {
			return nil, fmt.Errorf("%w: %d instances of %q, want at least 1", ErrConfig, n, name)
		}
	}
	if cfg.ShardPrefix == "" {
		cfg.ShardPrefix = hostToken()
	}
	if err := bus.ValidShardID(cfg.ShardPrefix); err != nil {
		return nil, fmt.Errorf("%w: shard prefix: %v", ErrConfig, err)
	}
	if cfg.NATS == "" && cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: DataDir is required for the embedded NATS server", ErrConfig)
	}
	if cfg.Output == nil {
		cfg.Output = os.Stderr
	}
	return &Supervisor{
		cfg:      cfg,
		log:      cfg.Logger,
		subj:     bus.Subjects{Prefix: cfg.Prefix},
		reserved: -1,
		life:     make(map[string]bus.Life),
		waiters:  make(map[string]chan struct{}),
	}, nil
}

// invokedPath is the path this binary was started by, made absolute: a
// child started later runs whatever file is at that path then, so that
// replacing the binary (or pointing a symlink at a new one) and sending
// SIGHUP upgrades the workers. os.Executable alone would follow a symlink
// to the old version. When argv[0] does not name this binary (a launcher
// set it to something else), the binary's own path is used.
func invokedPath() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		if p, err = exec.LookPath(p); err != nil {
			return self, nil
		}
	}
	if p, err = filepath.Abs(p); err != nil {
		return self, nil
	}
	a, errA := os.Stat(p)
	b, errB := os.Stat(self)
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		return self, nil
	}
	return p, nil
}

// hostToken turns the host name into a shard id token.
func hostToken() string {
	h, _ := os.Hostname()
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == '.':
			return orDefault(b.String())
		}
	}
	return orDefault(b.String())
}

func orDefault(s string) string {
	if s == "" {
		return "shoal"
	}
	return s
}

// Run starts NATS, the services and the workers, and supervises them until
// ctx is done; then it drains the workers, stops the services and NATS,
// and returns nil when everything stopped cleanly.
func (s *Supervisor) Run(ctx context.Context) error {
	if err := s.start(); err != nil {
		s.teardown()
		return err
	}
	s.awaitWorkers(ctx, 30*time.Second)
	s.awaitServices(ctx, 30*time.Second)
	scheme := "ws://"
	if s.cfg.TLS {
		scheme = "wss://"
	}
	s.log.Info("shoal serving",
		"ws", scheme+s.addr+"/ws/<service>",
		"workers", s.cfg.Workers,
		"services", s.servicesText(),
		"nats", s.natsURL,
		"admin", s.adminURL())
	<-ctx.Done()
	s.log.Info("shutting down: draining workers")
	err := s.stop()
	s.teardown()
	return err
}

// servicesText lists the services as --services takes them.
func (s *Supervisor) servicesText() string {
	list := make([]string, len(s.cfg.Services))
	for i, name := range s.cfg.Services {
		list[i] = name
		if n := s.instances(name); n > 1 {
			list[i] += "=" + strconv.Itoa(n)
		}
	}
	return strings.Join(list, ",")
}

// Addr is the gateway address the workers listen on (port resolved).
func (s *Supervisor) Addr() string { return s.addr }

// Workers is the number of worker processes, as chosen for --workers auto.
func (s *Supervisor) Workers() int { return s.cfg.Workers }

// NATSURL is the bus the children use.
func (s *Supervisor) NATSURL() string { return s.natsURL }

func (s *Supervisor) adminURL() string {
	if s.adminLn == nil {
		return ""
	}
	return "http://" + s.adminLn.Addr().String()
}

func (s *Supervisor) start() error {
	if err := s.reservePort(); err != nil {
		return err
	}
	if s.cfg.NATS == "" {
		host, port, err := splitHostPort(s.cfg.NATSListen)
		if err != nil {
			return fmt.Errorf("%w: nats listen address: %v", ErrConfig, err)
		}
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{
			Host:       host,
			Port:       port,
			StoreDir:   filepath.Join(s.cfg.DataDir, "nats"),
			JetStream:  true,
			MaxPayload: s.cfg.NATSMaxPayload,
			Logger:     s.log,
		})
		if err != nil {
			return fmt.Errorf("supervisor: embedded NATS: %w", err)
		}
		s.embedded = e
		s.natsURL = e.ClientURL()
	} else {
		s.natsURL = s.cfg.NATS
	}
	nc, err := bus.Connect(bus.Config{URL: s.natsURL, Name: "shoal-supervisor", Logger: s.log})
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	s.nc = nc
	if s.lifeSub, err = nc.Subscribe(s.subj.LifeAll(), s.onLife); err != nil {
		return fmt.Errorf("supervisor: subscribe life: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	if err := s.startAdmin(); err != nil {
		return err
	}
	s.spawn = newSpawner()
	s.mu.Lock()
	for _, name := range s.cfg.Services {
		for i := range s.instances(name) {
			s.svcs = append(s.svcs, s.newSlot(roleService, len(s.svcs), i, name))
		}
	}
	for i := range s.cfg.Workers {
		s.workers = append(s.workers, s.newSlot(roleWorker, i, i, ""))
	}
	slots := append(append([]*slot(nil), s.svcs...), s.workers...)
	s.mu.Unlock()
	for _, sl := range slots {
		s.wg.Add(1)
		go sl.keep()
	}
	return nil
}

// instances is the number of processes of service name.
func (s *Supervisor) instances(name string) int {
	if n := s.cfg.Instances[name]; n > 0 {
		return n
	}
	return 1
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	if p == 0 {
		p = -1 // nats-server's "any free port"
	}
	return host, p, nil
}

// stop drains the workers, then stops the services. It reports children
// that had to be killed.
func (s *Supervisor) stop() error {
	s.mu.Lock()
	s.stopped = true
	workers := append([]*slot(nil), s.workers...)
	svcs := append([]*slot(nil), s.svcs...)
	s.mu.Unlock()
	var errs []error
	stopAll := func(slots []*slot) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, sl := range slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := sl.stop(s.cfg.DrainTimeout + 5*time.Second); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	// The sockets close with the workers that hold them: new connections
	// are refused rather than queued for a worker that will not come.
	for _, sl := range workers {
		sl.closeListener()
	}
	// Workers first, so that their last events still reach the services.
	stopAll(workers)
	stopAll(svcs)
	s.wg.Wait()
	// A worker restarted while the others stopped opened its socket again.
	for _, sl := range workers {
		sl.closeListener()
	}
	return errors.Join(errs...)
}

func (s *Supervisor) teardown() {
	if s.spawn != nil {
		s.spawn.close()
	}
	if s.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.admin.Shutdown(ctx)
		cancel()
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
	}
	if s.reserved >= 0 {
		closeFd(s.reserved)
		s.reserved = -1
	}
	if s.debugTmp {
		_ = os.RemoveAll(s.debugDir)
	}
}

// onLife records a shard's life record.
func (s *Supervisor) onLife(m *nats.Msg) {
	var rec bus.Life
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		s.log.Debug("bad life record", "subject", m.Subject, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec.State == bus.LifeDown {
		delete(s.life, rec.Shard)
		return
	}
	s.life[rec.Shard] = rec
	if w, ok := s.waiters[rec.Shard]; ok {
		close(w)
		delete(s.waiters, rec.Shard)
	}
}

// waitUp returns a channel closed once shard publishes its first record.
func (s *Supervisor) waitUp(shard string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := s.life[shard]; ok {
		close(ch)
		return ch
	}
	s.waiters[shard] = ch
	return ch
}

// awaitWorkers waits until every first worker announced itself on the
// bus, so that "serving" means the port accepts. A worker that is slow to
// come up is logged, not fatal: its slot keeps restarting it.
func (s *Supervisor) awaitWorkers(ctx context.Context, limit time.Duration) {
	s.mu.Lock()
	workers := append([]*slot(nil), s.workers...)
	s.mu.Unlock()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for _, sl := range workers {
		var p *proc
		for p == nil {
			sl.mu.Lock()
			p = sl.cur
			sl.mu.Unlock()
			if p != nil {
				break
			}
			// The slot's loop has not started its first process yet.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-timer.C:
				s.log.Warn("workers not up yet", "waited", limit)
				return
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-s.waitUp(p.shard):
		case <-p.exited:
		case <-timer.C:
			s.log.Warn("workers not up yet", "waited", limit)
			return
		case <-ctx.Done():
			return
		}
	}
}

// awaitServices waits until every bundled service process subscribed to
// its subject: core NATS drops what nobody listens to, so a client that
// connected before its service was up would lose its first messages. With
// several processes of one service in a queue group, interest in the
// subject proves only that one of them is up, so each process is looked
// for by its own bus client name (bus.ServiceClientName) among the
// connections the server holds in the queue group. Only the embedded
// server can be asked; with an external one the wait is skipped.
func (s *Supervisor) awaitServices(ctx context.Context, limit time.Duration) {
	if s.embedded == nil || len(s.cfg.Services) == 0 {
		return
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting := s.unsubscribed()
		if len(waiting) == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			s.log.Warn("services not subscribed yet", "services", strings.Join(waiting, ", "), "waited", limit)
			return
		case <-ctx.Done():
			return
		}
	}
}

// unsubscribed lists the service processes whose current process holds no
// subscription in its service's queue group yet.
func (s *Supervisor) unsubscribed() []string {
	s.mu.Lock()
	svcs := append([]*slot(nil), s.svcs...)
	s.mu.Unlock()
	subscribed := make(map[string]map[string]bool) // service -> client names
	var waiting []string
	for _, sl := range svcs {
		names, ok := subscribed[sl.name]
		if !ok {
			// Bundled services use the default queue group: their name.
			list, err := s.embedded.QueueSubscribers(s.subj.Service(sl.name), sl.name)
			if err != nil {
				s.log.Debug("service subscriptions", "err", err)
			}
			names = make(map[string]bool, len(list))
			for _, n := range list {
				names[n] = true
			}
			subscribed[sl.name] = names
		}
		p := sl.current()
		if p == nil || !names[bus.ServiceClientName(sl.name, p.cmd.Process.Pid)] {
			waiting = append(waiting, sl.label())
		}
	}
	return waiting
}

// ReloadWorkers sends SIGHUP to every running worker, which reloads its TLS
// certificate and key in place: new handshakes get the new pair, and no
// connection is closed.
func (s *Supervisor) ReloadWorkers() {
	s.mu.Lock()
	workers := append([]*slot(nil), s.workers...)
	s.mu.Unlock()
	for _, sl := range workers {
		if p := sl.current(); p != nil {
			select {
			case <-p.exited:
			default:
				_ = p.cmd.Process.Signal(syscall.SIGHUP)
			}
		}
	}
}

// RollingRestart replaces the workers one at a time: a new worker starts
// and listens beside the old one before the old one drains (its clients
// hear 1012, service restart), so the port keeps accepting throughout. It
// returns when every worker was replaced.
func (s *Supervisor) RollingRestart(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return ErrStopped
	}
	workers := append([]*slot(nil), s.workers...)
	s.mu.Unlock()
	for _, sl := range workers {
		if err := sl.replace(ctx); err != nil {
			return err
		}
	}
	return nil
}
