package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
)

// Opcode is the kind of a WebSocket message, with the RFC 6455 values.
type Opcode uint8

// Opcodes of data messages.
const (
	Text   Opcode = 1
	Binary Opcode = 2
)

// String returns the bus name of op ("text", "binary").
func (op Opcode) String() string {
	switch op {
	case Text:
		return bus.OpcodeText
	case Binary:
		return bus.OpcodeBinary
	}
	return "opcode(" + strconv.Itoa(int(op)) + ")"
}

// Close codes the SDK sends on its own.
const (
	// CloseNormal is the default code of Conn.Close.
	CloseNormal = 1000
	// CloseInternalError is sent when a Handler's Open fails with an error
	// that is not a *CloseError. Clients may reconnect after a backoff.
	CloseInternalError = 1011
)

// Handler receives the events of the connections routed to a service.
// All events of one connection are delivered by one goroutine, in order;
// events of different connections run in parallel (Config.Workers).
type Handler interface {
	// Open is called when a client connected. A non-nil error closes the
	// connection with the code of a *CloseError, or CloseInternalError.
	Open(c *Conn) error
	// Message is called for every message of a client. data is valid until
	// Message returns; copy it to keep it.
	Message(c *Conn, op Opcode, data []byte)
	// Close is called when a connection ended, with the code the client sent
	// (1005 when it sent none, 1006 when the connection dropped).
	Close(c *Conn, code int, reason string)
}

// ShardWatcher may be implemented by a Handler that keeps state per shard,
// such as presence. Run then watches the shards' life records and calls
// ShardUp the first time a shard is heard of and ShardDown when it says
// "down" or misses bus.MissedBeats heartbeat intervals (counted while the
// service's own connection is up: after it reconnects, every shard has its
// intervals anew). A shard id heard
// again in a new life (an "up" record, or another process id) before its
// silence was noticed gets ShardDown then ShardUp: the old life's
// connections are gone. Both are called from one goroutine, never
// concurrently with each other, but concurrently with the Handler's event
// methods; they should return quickly, since life records wait meanwhile.
type ShardWatcher interface {
	ShardUp(shard string)
	ShardDown(shard string)
}

// Starter may be implemented by a Handler that prepares before events
// flow (opens storage, loads state, starts background work) and stops
// after the last one. Run calls Start before it subscribes, with its own
// context and the Service (for Publish and Conn from background work); an
// error makes Run return it without serving. Run calls Stop once the last
// Handler and ShardWatcher call returned.
type Starter interface {
	Start(ctx context.Context, s *Service) error
	Stop()
}

// Funcs implements Handler with functions; nil fields are no-ops.
type Funcs struct {
	OnOpen    func(c *Conn) error
	OnMessage func(c *Conn, op Opcode, data []byte)
	OnClose   func(c *Conn, code int, reason string)
	// OnDropped makes Funcs a DropHandler.
	OnDropped func(c *Conn, reason DropReason, count int)
}

// Open calls OnOpen if set.
func (f Funcs) Open(c *Conn) error {
	if f.OnOpen == nil {
		return nil
	}
	return f.OnOpen(c)
}

// Message calls OnMessage if set.
func (f Funcs) Message(c *Conn, op Opcode, data []byte) {
	if f.OnMessage != nil {
		f.OnMessage(c, op, data)
	}
}

// Close calls OnClose if set.
func (f Funcs) Close(c *Conn, code int, reason string) {
	if f.OnClose != nil {
		f.OnClose(c, code, reason)
	}
}

// Config configures a Service. The zero value of every field but Name means
// its default.
type Config struct {
	// Name is the service name, required: one token of [A-Za-z0-9_-]. Shards
	// publish its events on "<prefix>.svc.<name>".
	Name string
	// Prefix is the first part of every subject; default bus.DefaultPrefix.
	Prefix string
	// Queue is the queue group shared by the service's instances; default Name.
	Queue string
	// Workers is how many events are handled in parallel; default
	// 8*runtime.GOMAXPROCS(0), at least 16: handlers mostly wait on the
	// bus (a Join is a round trip to the shard) or on storage, so a worker
	// per CPU would leave the CPUs idle while events pile up. All events
	// of one connection go to the same worker, so their order holds.
	Workers int
	// RequestTimeout bounds a Join whose context has no deadline; default 5s.
	RequestTimeout time.Duration
	// Logger receives the service's logs; default discards them.
	Logger *slog.Logger
}

const (
	defaultRequestTimeout = 5 * time.Second
	// workerQueue is each worker's backlog. Small on purpose: when a worker
	// falls behind, the dispatch callback blocks and the backlog moves into
	// the subscription's pending buffer, whose limits are below.
	workerQueue = 256
	// pendingMsgs and pendingBytes raise nats.go's per-subscription limits
	// (64k messages, 64 MiB by default) so a burst waits there instead of
	// being dropped as a slow consumer.
	pendingMsgs  = 1 << 20
	pendingBytes = 256 << 20
)

// Service receives the events of one service name and answers through
// Conn, Publish and Broadcast. Its methods are safe for concurrent use.
type Service struct {
	nc       *nats.Conn
	h        Handler
	log      *slog.Logger
	subjects bus.Subjects
	name     string
	queue    string
	workers  int
	timeout  time.Duration

	started atomic.Bool
	ready   chan struct{}

	// mu guards queues against the dispatch callback sending on a queue that
	// shutdown closed: route holds it for reading, shutdown for writing.
	mu     sync.RWMutex
	closed bool
	queues []chan *nats.Msg
	sub    atomic.Pointer[nats.Subscription]

	shardSubjects sync.Map // shard id -> its command subject
	// compactShards holds the shards that take compact sends: their life
	// records say so, or they published a compact event. A shard of a
	// release before the compact form gets sends in the header form, so a
	// fleet upgraded one process at a time loses nothing.
	compactShards sync.Map // shard id -> struct{}

	events    atomic.Uint64
	malformed atomic.Uint64
	dropped   atomic.Uint64
}

// Stats are a Service's counters since New.
type Stats struct {
	// Events is how many well-formed events reached the Handler.
	Events uint64
	// Malformed is how many events were skipped: no or a bad Shoal-Conn, an
	// unknown Shoal-Event or Shoal-Opcode.
	Malformed uint64
	// Dropped is how many events were lost: dropped by the NATS client when
	// the subscription's pending limits overflowed, or arriving after Run
	// began to stop.
	Dropped uint64
}

// New returns a Service for cfg that uses nc, which the caller owns and
// closes after Run returned. Call Run to serve.
func New(nc *nats.Conn, cfg Config, h Handler) (*Service, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrInvalidConfig)
	}
	if h == nil {
		return nil, fmt.Errorf("%w: nil handler", ErrInvalidConfig)
	}
	if err := bus.ValidServiceName(cfg.Name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = bus.DefaultPrefix
	}
	// A prefix and a queue name follow the room rules: printable tokens
	// without wildcards, so they cannot change a subject's shape.
	if err := bus.ValidRoom(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("%w: prefix: %w", ErrInvalidConfig, err)
	}
	if cfg.Queue == "" {
		cfg.Queue = cfg.Name
	}
	if err := bus.ValidRoom(cfg.Queue); err != nil {
		return nil, fmt.Errorf("%w: queue: %w", ErrInvalidConfig, err)
	}
	if cfg.Workers < 0 {
		return nil, fmt.Errorf("%w: workers %d", ErrInvalidConfig, cfg.Workers)
	}
	if cfg.Workers == 0 {
		cfg.Workers = max(16, 8*runtime.GOMAXPROCS(0))
	}
	if cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("%w: request timeout %v", ErrInvalidConfig, cfg.RequestTimeout)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		nc:       nc,
		h:        h,
		log:      cfg.Logger,
		subjects: bus.Subjects{Prefix: cfg.Prefix},
		name:     cfg.Name,
		queue:    cfg.Queue,
		workers:  cfg.Workers,
		timeout:  cfg.RequestTimeout,
		ready:    make(chan struct{}),
	}, nil
}

// NATS returns the Service's connection, which the caller owns.
func (s *Service) NATS() *nats.Conn { return s.nc }

// Name returns the service name.
func (s *Service) Name() string { return s.name }

// Prefix returns the subject prefix the Service uses.
func (s *Service) Prefix() string { return s.subjects.Prefix }

// Ready is closed once Run has subscribed and flushed its subscriptions to
// the NATS server, so events published from then on reach this instance.
// If the flush failed because the connection is down, Ready is closed anyway:
// nats.go restores the subscriptions when it reconnects.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Stats returns the Service's counters.
func (s *Service) Stats() Stats {
	st := Stats{
		Events:    s.events.Load(),
		Malformed: s.malformed.Load(),
		Dropped:   s.dropped.Load(),
	}
	if sub := s.sub.Load(); sub != nil {
		if n, err := sub.Dropped(); err == nil && n > 0 {
			st.Dropped += uint64(n)
		}
	}
	return st
}

// Run subscribes to the service's events and serves them until ctx is done.
// It then drains: unsubscribes, handles the events already received, waits
// for the Handler calls in flight, and returns nil. It returns an error only
// if the Handler's Start (see Starter) failed or Run could not subscribe,
// or ErrRunning if called twice.
//
// Draining needs the NATS server to confirm the unsubscribe; while the
// connection is down it waits up to the connection's drain timeout.
func (s *Service) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	if st, ok := s.h.(Starter); ok {
		if err := st.Start(ctx, s); err != nil {
			return fmt.Errorf("service: start %s: %w", s.name, err)
		}
		defer st.Stop()
	}
	var workers sync.WaitGroup
	s.queues = make([]chan *nats.Msg, s.workers)
	for i := range s.queues {
		q := make(chan *nats.Msg, workerQueue)
		s.queues[i] = q
		workers.Go(func() {
			for m := range q {
				s.handle(m)
			}
		})
	}
	stopWorkers := func() {
		s.mu.Lock()
		s.closed = true
		for _, q := range s.queues {
			close(q)
		}
		s.mu.Unlock()
		workers.Wait()
	}

	// An async subscription, not a channel one: its callback runs on one
	// goroutine in arrival order, which keeps per-connection order while it
	// routes to the workers, and when it blocks on a full worker queue the
	// backlog waits in nats.go's pending buffer (limits raised above) rather
	// than in a channel that drops silently when full.
	subject := s.subjects.Service(s.name)
	sub, err := s.nc.QueueSubscribe(subject, s.queue, s.route)
	if err != nil {
		stopWorkers()
		return fmt.Errorf("service: subscribe %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
		s.log.Warn("service: pending limits", "err", err)
	}
	s.sub.Store(sub)

	// Life records say which shards take compact sends (bus.Life.Compact).
	capSub, err := s.nc.Subscribe(s.subjects.LifeAll(), s.learnShard)
	if err != nil {
		_ = sub.Unsubscribe()
		stopWorkers()
		return fmt.Errorf("service: subscribe %s: %w", s.subjects.LifeAll(), err)
	}
	defer func() { _ = capSub.Unsubscribe() }()

	var watch *watcher
	if sw, ok := s.h.(ShardWatcher); ok {
		watch, err = startWatcher(s.nc, s.subjects.LifeAll(), sw, s.log)
		if err != nil {
			_ = sub.Unsubscribe()
			stopWorkers()
			return err
		}
	}
	if err := s.nc.Flush(); err != nil {
		s.log.Warn("service: flush subscriptions", "err", err)
	}
	close(s.ready)
	s.log.Debug("service: subscribed", "subject", subject, "queue", s.queue, "workers", s.workers)

	<-ctx.Done()

	// Stop in the order events flow: no new events, then the ones received,
	// then the workers. Shard watching stops last; it feeds no worker.
	closedCh := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil {
		// The connection is closed or closing: nothing more will arrive.
		s.log.Debug("service: drain", "err", err)
		_ = sub.Unsubscribe()
	} else {
		for range closedCh {
		}
	}
	stopWorkers()
	if watch != nil {
		watch.stop()
	}
	return nil
}

// route runs on the subscription's single callback goroutine and hands an
// event to the worker owning its connection.
func (s *Service) route(m *nats.Msg) {
	var h uint32
	if m.Header == nil {
		cm, err := bus.ParseCompact(m.Data)
		if err != nil || cm.Kind != bus.CompactMessage {
			s.malformed.Add(1)
			s.log.Debug("service: malformed compact event", "subject", m.Subject, "err", err)
			return
		}
		h = connHash(cm.Conn)
	} else {
		id := m.Header.Get(bus.HeaderConn)
		if id == "" {
			s.malformed.Add(1)
			s.log.Debug("service: event without "+bus.HeaderConn, "subject", m.Subject)
			return
		}
		h = connHash(id)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		s.dropped.Add(1)
		return
	}
	s.queues[h%uint32(len(s.queues))] <- m
	s.mu.RUnlock()
}

// connHash is 32-bit FNV-1a, inline so routing allocates nothing. Both
// forms of an event hash the same id alike, so they share a worker.
func connHash[T string | []byte](s T) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// handle runs on a worker and calls the Handler for one event.
func (s *Service) handle(m *nats.Msg) {
	if m.Header == nil {
		s.handleCompact(m)
		return
	}
	hd := m.Header
	id := hd.Get(bus.HeaderConn)
	shard, _, err := bus.ParseConnID(id)
	if err != nil {
		s.badEvent(m, "bad "+bus.HeaderConn)
		return
	}
	c := &Conn{id: id, shard: shard, user: hd.Get(bus.HeaderUser), svc: s}
	switch hd.Get(bus.HeaderEvent) {
	case bus.EventOpen:
		c.remote = hd.Get(bus.HeaderRemote)
		c.path = hd.Get(bus.HeaderPath)
		s.events.Add(1)
		if err := s.h.Open(c); err != nil {
			s.refuse(c, err)
		}
	case bus.EventMessage:
		op, ok := parseOpcode(hd.Get(bus.HeaderOpcode))
		if !ok {
			s.badEvent(m, "bad "+bus.HeaderOpcode)
			return
		}
		s.events.Add(1)
		s.h.Message(c, op, m.Data)
	case bus.EventClose:
		code := 1005
		if v := hd.Get(bus.HeaderCloseCode); v != "" {
			if n, err := strconv.Atoi(v); err == nil {
				code = n
			}
		}
		s.events.Add(1)
		s.h.Close(c, code, hd.Get(bus.HeaderCloseReason))
	case bus.EventDropped:
		n, err := strconv.Atoi(hd.Get(bus.HeaderDropCount))
		reason := hd.Get(bus.HeaderDropReason)
		if err != nil || n < 1 || reason == "" {
			s.badEvent(m, "bad "+bus.HeaderDropCount+" or "+bus.HeaderDropReason)
			return
		}
		if dh, ok := s.h.(DropHandler); ok {
			s.events.Add(1)
			dh.Dropped(c, DropReason(reason), n)
		}
	default:
		s.badEvent(m, "bad "+bus.HeaderEvent)
	}
}

// handleCompact handles a message event in the compact form; route
// already checked that it parses.
func (s *Service) handleCompact(m *nats.Msg) {
	cm, _ := bus.ParseCompact(m.Data)
	id := string(cm.Conn)
	shard, _, err := bus.ParseConnID(id)
	if err != nil {
		s.badEvent(m, "bad connection id")
		return
	}
	s.markCompact(shard)
	op := Text
	if cm.Binary {
		op = Binary
	}
	s.events.Add(1)
	s.h.Message(&Conn{id: id, shard: shard, user: string(cm.User), svc: s}, op, cm.Data)
}

func (s *Service) badEvent(m *nats.Msg, why string) {
	s.malformed.Add(1)
	s.log.Debug("service: malformed event", "why", why, "subject", m.Subject,
		"conn", m.Header.Get(bus.HeaderConn), "event", m.Header.Get(bus.HeaderEvent))
}

// refuse closes a connection whose Open failed.
func (s *Service) refuse(c *Conn, err error) {
	code, reason := CloseInternalError, "internal error"
	var ce *CloseError
	if errors.As(err, &ce) && validCloseCode(ce.Code) {
		code, reason = ce.Code, ce.Reason
	} else {
		s.log.Warn("service: open failed", "conn", c.id, "err", err)
	}
	if err := c.Close(code, reason); err != nil {
		s.log.Warn("service: close refused connection", "conn", c.id, "err", err)
	}
}

func parseOpcode(v string) (Opcode, bool) {
	switch v {
	case "", bus.OpcodeText:
		return Text, true
	case bus.OpcodeBinary:
		return Binary, true
	}
	return 0, false
}

// Publish sends data to every member of room, on every shard.
func (s *Service) Publish(room string, op Opcode, data []byte) error {
	if err := bus.ValidRoom(room); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoom, err)
	}
	opv, err := opcodeValue(op)
	if err != nil {
		return err
	}
	return s.publish(s.subjects.Room(room), nats.Header{bus.HeaderOpcode: {opv}}, data)
}

// Broadcast sends data to every connection of every shard.
func (s *Service) Broadcast(op Opcode, data []byte) error {
	opv, err := opcodeValue(op)
	if err != nil {
		return err
	}
	return s.publish(s.subjects.All(), nats.Header{bus.HeaderOpcode: {opv}}, data)
}

// Conn returns a handle for a connection id learned earlier (Conn.ID), for
// example from storage. The handle knows only the id and shard: User,
// Remote and Path are empty.
func (s *Service) Conn(id string) (*Conn, error) {
	shard, _, err := bus.ParseConnID(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConn, err)
	}
	return &Conn{id: id, shard: shard, svc: s}, nil
}

// learnShard reads a life record for the shard's capabilities.
func (s *Service) learnShard(m *nats.Msg) {
	var rec struct {
		Shard   string `json:"shard"`
		Compact bool   `json:"compact"`
	}
	if json.Unmarshal(m.Data, &rec) == nil && rec.Compact && bus.ValidShardID(rec.Shard) == nil {
		s.markCompact(rec.Shard)
	}
}

// markCompact notes that shard takes compact sends.
func (s *Service) markCompact(shard string) {
	if _, ok := s.compactShards.Load(shard); !ok {
		s.compactShards.Store(shard, struct{}{})
	}
}

// shardSubject is Subjects.Shard, remembered: a service sends to few
// shards, and building the subject per Send was an allocation per message.
func (s *Service) shardSubject(shard string) string {
	if v, ok := s.shardSubjects.Load(shard); ok {
		return v.(string)
	}
	subj := s.subjects.Shard(shard)
	s.shardSubjects.Store(shard, subj)
	return subj
}

// send publishes a send command of opcode value opv: compact to a shard
// known to take it, in the header form to any other.
func (s *Service) send(c *Conn, opv string, data []byte) error {
	subject := s.shardSubject(c.shard)
	if _, ok := s.compactShards.Load(c.shard); !ok {
		return s.publish(subject, nats.Header{
			bus.HeaderCmd:    {bus.CmdSend},
			bus.HeaderConn:   {c.id},
			bus.HeaderOpcode: {opv},
		}, data)
	}
	if err := bus.PublishCompactSend(s.nc, subject, c.id, opv == bus.OpcodeBinary, data); err != nil {
		return fmt.Errorf("service: publish %s: %w", subject, err)
	}
	return nil
}

func (s *Service) publish(subject string, h nats.Header, data []byte) error {
	if err := s.nc.PublishMsg(&nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
		return fmt.Errorf("service: publish %s: %w", subject, err)
	}
	return nil
}
