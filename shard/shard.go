package shard

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/netpoll"
	"github.com/shoal-gw/shoal/wire"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxMessage        = 1 << 20
	DefaultMaxQueue          = 4 << 20
	DefaultMaxMessageRate    = 1000
	DefaultPingInterval      = 30 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultCloseTimeout      = 3 * time.Second
	DefaultDrainTimeout      = 10 * time.Second
	DefaultHeartbeatInterval = time.Second
	DefaultReadBufferSize    = 32 << 10
)

// maxReadsPerEvent bounds the reads one readiness event makes, so that a
// client streaming at full speed shares the pool with the others.
const maxReadsPerEvent = 4

// inboxSize is the channel between the NATS client and the dispatcher. It
// is one channel for all of the shard's subscriptions, so that commands,
// room messages and broadcasts reach connections in the order NATS
// delivered them.
const inboxSize = 1 << 16

// Past inboxHigh messages waiting in the inbox, the read path stops reading
// clients until the dispatcher is back under inboxLow (see awaitInbox).
// What clients send mostly comes back as commands (an echo, a chat's
// answer): a worker that read on while its dispatcher fell behind would
// fill the inbox, and NATS drops what does not fit. Waiting instead leaves
// the clients' bytes in their sockets, and TCP slows them down. The
// headroom above inboxHigh holds the answers already on their way.
const (
	inboxHigh = inboxSize / 4
	inboxLow  = inboxSize / 8
)

// inlineInbox is the dispatcher backlog from which the poller hands reads
// to the pool again: a poller reading inline while events keep coming
// would hold the only P, and the dispatcher and the NATS flusher would run
// only when it is preempted.
const inlineInbox = 32

// Config configures a Shard. ID, NATS and Addr (or Listener) are required;
// every other zero value means its default.
type Config struct {
	// ID names the shard on the bus (shoal.shard.<ID>); one token of
	// [A-Za-z0-9_-], unique across the fleet.
	ID string
	// Addr is the listen address, shared with the other workers through
	// SO_REUSEPORT.
	Addr string
	// Listener, when set, is used instead of opening Addr.
	Listener *acceptor.Listener
	// NATS is the shard's bus connection; the shard does not close it.
	NATS *nats.Conn
	// Prefix is the subject prefix (default "shoal").
	Prefix string
	// Services lists the names routable at /ws/<name>.
	Services []string
	// Compress lists the services whose clients may negotiate
	// permessage-deflate (RFC 7692), without context takeover; "*" names
	// every service. A compressed message is limited to MaxMessage once
	// decompressed (past it: 1009).
	Compress []string

	// MaxMessage bounds a client message after reassembly (default 1 MiB);
	// a larger one closes the connection with 1009.
	MaxMessage int64
	// MaxQueue bounds the bytes waiting for one slow client (default
	// 4 MiB) beyond the frame being written; past it the client's service's
	// SlowPolicy applies: closed with 1008, or its oldest frames dropped.
	MaxQueue int
	// MaxMessageRate bounds the messages per second a client may send
	// (default 1000; negative: no limit), with bursts of MaxMessageBurst
	// (default: as many as the rate). A message past it is dropped, and the
	// service hears of it in a dropped event. Pings spend the same tokens:
	// one past the rate gets no pong.
	MaxMessageRate  int
	MaxMessageBurst int
	// MaxMessageDrops closes a client with 1008 once more than this many
	// of its messages (or pings) were refused within 10 seconds (default:
	// the burst; negative: never): a client that keeps flooding after its
	// messages are dropped is not coming back to its senses.
	MaxMessageDrops int
	// SlowPolicy is what happens when a client's queue would pass MaxQueue:
	// SlowClose (the default) or SlowDropOldest. SlowPolicies sets it per
	// service name; services it does not name follow SlowPolicy.
	SlowPolicy   SlowPolicy
	SlowPolicies map[string]SlowPolicy
	// HandshakeTimeout bounds accept to upgrade (default 5s).
	HandshakeTimeout time.Duration
	// PingInterval is the silence after which the server pings (default
	// 30s); IdleTimeout the silence after which it closes (default 75s).
	PingInterval, IdleTimeout time.Duration
	// CloseTimeout bounds the wait for the peer's answer to a close frame
	// (default 3s).
	CloseTimeout time.Duration
	// DrainTimeout bounds Shutdown's wait for clients (default 10s).
	DrainTimeout time.Duration
	// DrainWindow is the time over which Shutdown spreads its close frames
	// to the clients, in batches, so that they do not all reconnect at
	// once (default 5s; negative: all at once). Each close reason asks its
	// client to wait a random delay of up to the window (at least up to
	// 1s) before reconnecting. The window ends early enough to leave the
	// last clients CloseTimeout to answer within the drain's deadline.
	DrainWindow time.Duration
	// HeartbeatInterval spaces the life records (default 1s).
	HeartbeatInterval time.Duration
	// MaxConnsPerIP bounds connections from one address (default 4096;
	// negative: no limit); past it: HTTP 429.
	MaxConnsPerIP int
	// MaxConns bounds the WebSocket connections of the shard (default
	// acceptor.DefaultMaxConns(), from the open-files limit; negative: no
	// limit); past it: HTTP 503 at handshake.
	MaxConns int
	// MaxHandshakeRate bounds new upgrades per second (default 10000;
	// negative: no limit); past it: HTTP 503 with Retry-After.
	MaxHandshakeRate int
	// AllowedOrigins and ServiceOrigins: see acceptor.Config. The services
	// ServiceOrigins names must be among Services.
	AllowedOrigins []string
	ServiceOrigins map[string][]string
	// Authenticate: see acceptor.Config.
	Authenticate func(*acceptor.Request) (user string, err error)
	// TLS, when set, makes the port speak TLS: wss:// and https://. See
	// acceptor.Config.TLS; certificates are best given through
	// GetCertificate (acceptor.KeyPair), so that they can be reloaded.
	TLS *tls.Config
	// HTTP serves plain HTTP other than /healthz (the web client's files).
	HTTP http.Handler
	// PoolWorkers sizes the goroutine pool (default: netpoll's).
	PoolWorkers int
	// ReadBufferSize is the pooled buffer one read uses (default 32 KiB).
	ReadBufferSize int

	Logger *slog.Logger
}

// route is a service connections can reach.
type route struct {
	name     string
	subject  string
	slow     SlowPolicy
	compress bool // its clients may negotiate permessage-deflate
	// compact is set once a compact send reached one of the service's
	// connections: the service reads compact events (see bus.Life.Compact).
	compact atomic.Bool
}

// Shard is one worker: it owns a listener, a poller, a pool, a wheel, and
// every connection accepted on them.
type Shard struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	subj    bus.Subjects
	poller  *netpoll.Poller
	pool    *netpoll.Pool
	wheel   *netpoll.Wheel
	acc     *acceptor.Acceptor
	wireCfg wire.Config
	// wireDeflate is wireCfg for connections that negotiated
	// permessage-deflate.
	wireDeflate wire.Config
	routes      map[string]*route
	// inlineReads runs read tasks on the poller goroutine itself when the
	// process has one P: handing them to the pool then buys no
	// parallelism, only a goroutine switch and a wake-up (measured in
	// BENCHMARKS.md, echo).
	inlineReads bool

	msgRate   netpoll.Rate // MaxMessageRate, one bucket per connection
	readBufs  sync.Pool    // *[]byte of ReadBufferSize
	msgs      sync.Pool    // *nats.Msg with a header map, for events
	pingFrame []byte
	nextID    atomic.Uint64

	connsMu sync.RWMutex
	conns   map[uint64]*conn

	roomsMu    sync.RWMutex
	rooms      map[string]*room
	roomsBySub map[*nats.Subscription]*room

	inbox        chan *nats.Msg
	subsMu       sync.Mutex // guards subs, which the heartbeat reads
	subs         []*nats.Subscription
	cmdSub       *nats.Subscription
	allSub       *nats.Subscription
	pendingJoins []pendingJoin // dispatcher goroutine only
	// The dispatcher's batch (see deliver); dispatcher goroutine only.
	cork      bool
	corked    []*conn
	corkMsgs  int
	corkStart time.Time // when the dispatcher took the message that began the batch

	stats stats

	mu         sync.Mutex
	started    bool
	draining   atomic.Bool
	restarting atomic.Bool // Shutdown tells clients 1012, not 1001
	stopped    bool
	stop       chan struct{}
	wg         sync.WaitGroup
}

// New prepares a shard: it opens the listener and the poller but accepts
// nothing before Start.
func New(cfg Config) (*Shard, error) {
	if err := bus.ValidShardID(cfg.ID); err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	if cfg.NATS == nil {
		return nil, errors.New("shard: Config.NATS is required")
	}
	if cfg.Listener == nil && cfg.Addr == "" {
		return nil, errors.New("shard: Config.Addr is required")
	}
	setDefaults(&cfg)
	// A client message travels as one NATS message with a few headers.
	if max := cfg.NATS.MaxPayload(); cfg.MaxMessage+16<<10 > max {
		return nil, fmt.Errorf("shard: max message %d bytes does not fit the NATS server's max_payload of %d bytes: lower it or raise max_payload", cfg.MaxMessage, max)
	}
	s := &Shard{
		cfg:         cfg,
		log:         cfg.Logger.With("shard", cfg.ID),
		nc:          cfg.NATS,
		subj:        bus.Subjects{Prefix: cfg.Prefix},
		wireCfg:     wire.Config{Role: wire.Server, MaxMessage: cfg.MaxMessage},
		wireDeflate: wire.Config{Role: wire.Server, MaxMessage: cfg.MaxMessage, Deflate: true},
		routes:      make(map[string]*route),
		inlineReads: runtime.GOMAXPROCS(0) == 1,
		conns:       make(map[uint64]*conn),
		rooms:       make(map[string]*room),
		roomsBySub:  make(map[*nats.Subscription]*room),
		inbox:       make(chan *nats.Msg, inboxSize),
		stop:        make(chan struct{}),
		pingFrame:   wire.AppendFrame(nil, 0x9, true, nil),
	}
	s.stats.init()
	for _, name := range cfg.Services {
		if err := bus.ValidServiceName(name); err != nil {
			return nil, fmt.Errorf("shard: %w", err)
		}
		slow, ok := cfg.SlowPolicies[name]
		if !ok {
			slow = cfg.SlowPolicy
		}
		s.routes[name] = &route{name: name, subject: s.subj.Service(name), slow: slow}
	}
	for name := range cfg.SlowPolicies {
		if s.routes[name] == nil {
			return nil, fmt.Errorf("shard: slow-consumer policy for %q, which is not one of the services", name)
		}
	}
	for _, name := range cfg.Compress {
		for _, r := range s.routes {
			if name == "*" || name == r.name {
				r.compress = true
			}
		}
		if _, ok := s.routes[name]; !ok && name != "*" {
			return nil, fmt.Errorf("shard: compress %q: not a service of this shard", name)
		}
	}
	for name := range cfg.ServiceOrigins {
		if _, ok := s.routes[name]; !ok {
			return nil, fmt.Errorf("shard: allowed origins for %q: not a service of this shard", name)
		}
	}
	s.msgRate = netpoll.NewRate(cfg.MaxMessageRate, cfg.MaxMessageBurst)
	size := cfg.ReadBufferSize
	s.readBufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	s.msgs.New = func() any { return &nats.Msg{Header: make(nats.Header, 6)} }
	s.nextID.Store(randomBase())

	var err error
	if s.poller, err = netpoll.NewPoller(s.log); err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	s.pool = netpoll.NewPoolConfig(netpoll.PoolConfig{Workers: cfg.PoolWorkers, Logger: s.log})
	s.wheel = netpoll.NewWheel(100*time.Millisecond, 0)
	ln := cfg.Listener
	if ln == nil {
		if ln, err = acceptor.Listen(cfg.Addr, 0); err != nil {
			s.closeParts()
			return nil, fmt.Errorf("shard: %w", err)
		}
	}
	s.acc, err = acceptor.New(ln, acceptor.Config{
		Poller:           s.poller,
		Pool:             s.pool,
		Wheel:            s.wheel,
		HandshakeTimeout: cfg.HandshakeTimeout,
		MaxConnsPerIP:    cfg.MaxConnsPerIP,
		MaxConns:         cfg.MaxConns,
		MaxHandshakeRate: cfg.MaxHandshakeRate,
		Services:         s.routable,
		Compress:         s.compresses,
		AllowedOrigins:   cfg.AllowedOrigins,
		ServiceOrigins:   cfg.ServiceOrigins,
		Authenticate:     cfg.Authenticate,
		TLS:              cfg.TLS,
		HTTP:             s.httpHandler(),
		Upgraded:         s.onUpgraded,
		Rejected:         s.stats.reject,
		Logger:           s.log,
	})
	if err != nil {
		ln.Close()
		s.closeParts()
		return nil, fmt.Errorf("shard: %w", err)
	}
	return s, nil
}

func setDefaults(cfg *Config) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.MaxMessageRate == 0 {
		cfg.MaxMessageRate = DefaultMaxMessageRate
	}
	if cfg.MaxMessageBurst <= 0 {
		cfg.MaxMessageBurst = max(cfg.MaxMessageRate, 1)
	}
	if cfg.MaxMessageDrops == 0 {
		cfg.MaxMessageDrops = cfg.MaxMessageBurst
	}
	def(&cfg.HandshakeTimeout, acceptor.DefaultHandshakeTimeout)
	def(&cfg.PingInterval, DefaultPingInterval)
	def(&cfg.IdleTimeout, DefaultIdleTimeout)
	def(&cfg.CloseTimeout, DefaultCloseTimeout)
	def(&cfg.DrainTimeout, DefaultDrainTimeout)
	if cfg.DrainWindow == 0 {
		cfg.DrainWindow = DefaultDrainWindow
	}
	def(&cfg.HeartbeatInterval, DefaultHeartbeatInterval)
	if cfg.IdleTimeout < cfg.PingInterval {
		cfg.IdleTimeout = cfg.PingInterval
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = DefaultReadBufferSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
}

// randomBase starts connection ids at a random point below 2^52, so that a
// restarted shard does not reuse the ids of its previous life and the ids
// stay exact in languages whose numbers are doubles.
func randomBase() uint64 {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) & (1<<52 - 1)
}

// ID is the shard's id on the bus.
func (s *Shard) ID() string { return s.cfg.ID }

// Addr is the address the shard listens on.
func (s *Shard) Addr() netip.AddrPort { return s.acc.Addr() }

func (s *Shard) routable(name string) bool {
	_, ok := s.routes[name]
	return ok
}

func (s *Shard) compresses(name string) bool {
	r := s.routes[name]
	return r != nil && r.compress
}

// schedule runs a task on the pool; when the pool is closed (the shard is
// stopping) the task runs inline, so that no connection is left half done.
func (s *Shard) schedule(t netpoll.Task) {
	if err := s.pool.Schedule(t); err != nil {
		t.Run()
	}
}

// Start subscribes to the shard's subjects, announces the shard and starts
// accepting.
func (s *Shard) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("shard: already started")
	}
	s.started = true
	s.wheel.Start()
	for _, subject := range []string{s.subj.Shard(s.cfg.ID), s.subj.All()} {
		sub, err := s.nc.ChanSubscribe(subject, s.inbox)
		if err != nil {
			return fmt.Errorf("shard: subscribe %s: %w", subject, err)
		}
		s.subsMu.Lock()
		s.subs = append(s.subs, sub)
		s.subsMu.Unlock()
	}
	s.cmdSub, s.allSub = s.subs[0], s.subs[1]
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("shard: subscribe: %w", err)
	}
	s.wg.Add(2)
	go s.dispatch()
	go s.heartbeat()
	s.publishLife(bus.LifeUp)
	if err := s.acc.Start(); err != nil {
		return fmt.Errorf("shard: %w", err)
	}
	s.log.Info("shard started", "addr", s.Addr(), "pid", os.Getpid())
	return nil
}

// Run starts the shard, serves until ctx is done, then drains it.
func (s *Shard) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		s.Close()
		return err
	}
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	return s.Shutdown(dctx)
}

// Restarting makes Shutdown close clients with 1012 (service restart)
// instead of 1001 (going away): the server is being replaced, and a client
// may reconnect at once, to the worker that replaces this one.
func (s *Shard) Restarting() { s.restarting.Store(true) }

// Shutdown drains the shard: it stops accepting, sends every client a
// close frame 1001 (going away; 1012 after Restarting), spread over the
// drain window (see goAwayAll), waits until they are gone or ctx is done,
// ends whoever is left, says "down" on the bus and releases everything.
// It returns ctx.Err() if clients were still connected when ctx ended.
// Safe to call twice.
func (s *Shard) Shutdown(ctx context.Context) error {
	if !s.draining.CompareAndSwap(false, true) {
		s.waitStopped()
		return nil
	}
	s.acc.StopAccepting()
	code, reason := 1001, "server shutting down"
	if s.restarting.Load() {
		code, reason = 1012, "server restarting"
	}
	start := time.Now()
	s.log.Info("shard draining", "conns", s.Conns(), "code", code, "window", s.drainWindow(ctx))
	s.goAwayAll(ctx, code, reason)
	err := s.waitEmpty(ctx, code, reason)
	left := s.snapshot()
	for _, c := range left {
		c.terminate()
	}
	s.Close()
	s.log.Info("shard drained", "took", time.Since(start).Round(time.Millisecond), "dropped", len(left))
	return err
}

// Close releases the shard at once: connections are dropped without a
// close handshake. Shutdown is the graceful way. Safe to call twice.
func (s *Shard) Close() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	started := s.started
	s.mu.Unlock()
	s.draining.Store(true)
	s.acc.Close()
	for _, c := range s.snapshot() {
		c.terminate()
	}
	if started {
		for _, sub := range s.subs {
			_ = sub.Unsubscribe()
		}
		s.roomsMu.Lock()
		for _, r := range s.rooms {
			_ = r.sub.Unsubscribe()
		}
		s.roomsMu.Unlock()
		close(s.stop)
		s.wg.Wait()
		s.publishLife(bus.LifeDown)
		_ = s.nc.FlushTimeout(time.Second)
	}
	s.closeParts()
}

func (s *Shard) closeParts() {
	if s.wheel != nil {
		s.wheel.Stop()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.poller != nil {
		_ = s.poller.Close()
	}
}

func (s *Shard) waitStopped() {
	for {
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Conns is the number of connections held.
func (s *Shard) Conns() int {
	s.connsMu.RLock()
	defer s.connsMu.RUnlock()
	return len(s.conns)
}

func (s *Shard) snapshot() []*conn {
	s.connsMu.RLock()
	defer s.connsMu.RUnlock()
	list := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		list = append(list, c)
	}
	return list
}

// onUpgraded takes a connection from the acceptor, on a pool goroutine.
func (s *Shard) onUpgraded(u *acceptor.Upgraded) {
	id := s.nextID.Add(1)
	c := &conn{
		s:       s,
		id:      id,
		cid:     s.cfg.ID + "." + strconv.FormatUint(id, 10),
		route:   s.routes[u.Service],
		remote:  u.Remote,
		fd:      int32(u.Fd),
		user:    u.User,
		tls:     u.TLS,
		deflate: u.Deflate,
	}
	c.lastRead.Store(s.wheel.Now())
	s.connsMu.Lock()
	s.conns[id] = c
	s.connsMu.Unlock()
	s.stats.upgrades.Add(1)
	if err := s.publishOpen(c, u.URI); err != nil {
		s.stats.busErrors.Add(1)
	}
	var ferr error
	if len(u.Rest) > 0 {
		// Frames sent right behind the handshake come before the socket's.
		ferr = c.rd.Feed(c.wireConfig(), u.Rest, c)
	}
	eof := false
	if ferr == nil && c.tls != nil {
		// TLS may hold more of what the client sent behind its request,
		// which no readiness event will announce.
		bp := s.readBufs.Get().(*[]byte)
		ferr, eof = c.readTLS(nil, (*bp)[len(*bp)/2:])
		s.readBufs.Put(bp)
	}
	switch {
	case ferr != nil:
		c.readFailed(ferr)
	case eof:
		c.terminate()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateDead {
		return
	}
	c.interest = netpoll.Read
	if err := s.poller.Add(u.Fd, netpoll.Read|netpoll.OneShot, c.onEvent); err != nil {
		s.log.Warn("register connection", "err", err)
		c.scheduleEndLocked()
		return
	}
	if c.state == stateOpen {
		next := s.cfg.PingInterval
		// Frames sent behind the handshake may have been dropped already.
		if wait, ok := c.reportDueLocked(s.wheel.Now()); ok {
			next = min(next, wait)
		}
		s.wheel.Schedule(&c.timer, next, c)
	}
}

// goAway starts a server-side close of an open connection.
func (c *conn) goAway(code int, reason string) {
	c.mu.Lock()
	if c.state == stateOpen {
		c.beginCloseLocked(wsCode(code), reason, afterShutdown)
		c.flushLocked()
	}
	c.mu.Unlock()
}

// isOpen reports whether no close has begun.
func (c *conn) isOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateOpen
}

// terminate ends a connection: it leaves the poller, the wheel, its rooms
// and the table, the service hears a close event, and the fd is closed
// once no syscall uses it. Idempotent; called with no lock held.
func (c *conn) terminate() {
	s := c.s
	c.mu.Lock()
	if c.state == stateDead {
		c.mu.Unlock()
		return
	}
	c.state = stateDead
	code, reason := c.closeCode, c.closeReason
	if code == 0 {
		code = 1006
	}
	c.clearQueueLocked()
	_ = s.poller.Del(int(c.fd))
	if c.refs == 0 && !c.fdClosed {
		c.fdClosed = true
		closeFd(int(c.fd))
	}
	user := c.user
	// The service hears of every drop before the close: what is left
	// unreported goes now, or, while a report is being published, with
	// the close event after it (see reportTask).
	var drops [numDropReasons]uint32
	owed := false
	if d := c.drops; d != nil {
		if d.reporting {
			d.closeOwed, owed = true, true
			c.closeCode, c.closeReason = code, reason
		} else {
			drops = d.takeLocked()
		}
	}
	c.mu.Unlock()

	s.wheel.Cancel(&c.timer)
	s.leaveAll(c)
	s.connsMu.Lock()
	delete(s.conns, c.id)
	s.connsMu.Unlock()
	s.acc.Release(c.remote)
	s.stats.closed(uint16(code))
	if owed {
		return
	}
	s.publishDropped(c, user, drops)
	if err := s.publishClose(c, user, uint16(code), reason); err != nil {
		s.stats.busErrors.Add(1)
	}
}
