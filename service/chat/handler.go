package chat

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service"
)

// Signer makes the tokens that welcome hands out; auth.Key is one.
type Signer interface {
	// Sign returns a token naming user for the services in audience,
	// valid from now for ttl, and when it expires.
	Sign(user string, audience []string, ttl time.Duration, now time.Time) (token string, expires time.Time, err error)
}

// Defaults for the zero values of Config.
const (
	DefaultHistory        = 100
	DefaultTokenTTL       = 24 * time.Hour
	DefaultRate           = 10
	DefaultBurst          = 20
	DefaultRequestTimeout = 5 * time.Second
	// DefaultShardTimeout is bus.MissedBeats heartbeats of a shard at the
	// default interval of one second.
	DefaultShardTimeout = bus.MissedBeats * time.Second
)

// Config configures a Handler. Store and Tokens are required; the zero
// value of every other field means its default.
type Config struct {
	// Store holds accounts, rooms, presence and history.
	Store *service.Store
	// Tokens signs the token of every welcome.
	Tokens Signer
	// TokenTTL is how long a token is valid (default 24h).
	TokenTTL time.Duration
	// History is how many messages are kept per room (default 100).
	History int
	// MaxText bounds a message's text in bytes, after trimming (default
	// DefaultMaxText).
	MaxText int
	// Rate is how many messages per second one user may say, refilling a
	// bucket of Burst (defaults 10 and 20; a negative Rate: no limit). Each
	// instance counts the says it handles, see PROTOCOL.md.
	Rate  float64
	Burst int
	// BcryptCost is the cost of new password hashes (default
	// bcrypt.DefaultCost). Each step doubles the work of register and
	// login; tests and benches with thousands of users lower it.
	BcryptCost int
	// Stream, Accounts, Rooms and Presence name the history stream and the
	// buckets (default "<p>_chat_history", "<p>_chat_accounts",
	// "<p>_chat_rooms", "<p>_chat_presence", where <p> is the subject
	// prefix with dots as underscores).
	Stream, Accounts, Rooms, Presence string
	// RequestTimeout bounds the storage and bus work of one request
	// (default 5s).
	RequestTimeout time.Duration
	// ShardTimeout is how long a shard named in presence may stay unheard
	// after this instance started (or reconnected to NATS) before its
	// connections count as gone (default 3s: three heartbeats at the
	// default interval). It covers shards that died while no instance was
	// running. Keep it above three heartbeat intervals of the shards.
	ShardTimeout time.Duration
	// Logger receives the service's logs; default discards them.
	Logger *slog.Logger
}

// Handler is the chat service. It implements service.Handler,
// service.ShardWatcher and service.Starter; give it to service.New and
// Run the Service. Several instances (processes, or Handlers on one NATS)
// share all state through the Store and behave as one.
type Handler struct {
	cfg Config
	log *slog.Logger

	// Set by Start.
	svc      *service.Service
	accounts *service.KV
	rooms    *service.KV
	presence *service.KV
	history  *service.Stream
	subject  string // history subject prefix: "<prefix>.chat.msg."
	audience []string

	epoch  atomic.Pointer[string]
	mirror *mirror
	chains chains
	says   *limiter // per user
	auths  *limiter // per connection
	shards shardTable
	// dummyHash is compared with when a login names no account, so an
	// unknown user costs as much time as a wrong password.
	dummyHash []byte

	instance string // unique per Handler, for message ids
	msgN     atomic.Uint64

	// life ends when Stop is called: background work runs under it.
	life     context.Context
	stop     context.CancelFunc
	bg       sync.WaitGroup
	watchers []*service.Watcher
}

// New checks cfg and returns a Handler; Start (called by the Service's
// Run) opens the storage.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if cfg.Tokens == nil {
		return nil, fmt.Errorf("%w: Tokens is required", ErrConfig)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.TokenTTL, DefaultTokenTTL)
	def(&cfg.RequestTimeout, DefaultRequestTimeout)
	def(&cfg.ShardTimeout, DefaultShardTimeout)
	if cfg.History == 0 {
		cfg.History = DefaultHistory
	}
	if cfg.MaxText == 0 {
		cfg.MaxText = DefaultMaxText
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = bcrypt.DefaultCost
	}
	switch {
	case cfg.TokenTTL < 0, cfg.RequestTimeout < 0, cfg.ShardTimeout < 0:
		return nil, fmt.Errorf("%w: negative duration", ErrConfig)
	case cfg.History < 0, cfg.MaxText < 0, cfg.Burst < 0:
		return nil, fmt.Errorf("%w: negative history, text limit or burst", ErrConfig)
	case cfg.BcryptCost < bcrypt.MinCost || cfg.BcryptCost > bcrypt.MaxCost:
		return nil, fmt.Errorf("%w: bcrypt cost %d not in %d..%d", ErrConfig, cfg.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var id [6]byte
	_, _ = crand.Read(id[:])
	dummy, err := bcrypt.GenerateFromPassword([]byte("no account has this password"), cfg.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	life, stop := context.WithCancel(context.Background())
	return &Handler{
		cfg:       cfg,
		log:       cfg.Logger,
		mirror:    newMirror(),
		says:      newLimiter(cfg.Rate, float64(cfg.Burst)),
		auths:     newLimiter(authRate, authBurst),
		dummyHash: dummy,
		instance:  hex.EncodeToString(id[:]),
		life:      life,
		stop:      stop,
	}, nil
}

// Register and login attempts per connection: bcrypt makes each one
// expensive on purpose, and a client has no reason for more.
const (
	authRate  = 1
	authBurst = 5
)

// storeName turns a subject prefix into a name JetStream accepts.
func storeName(prefix, what string) string {
	return strings.ReplaceAll(prefix, ".", "_") + "_chat_" + what
}

// Start opens (creating if missing) the history stream and the buckets,
// loads presence and rooms into memory, and starts the background work.
// The Service's Run calls it before events flow.
func (h *Handler) Start(ctx context.Context, svc *service.Service) error {
	h.svc = svc
	h.audience = []string{svc.Name()}
	prefix := svc.Prefix()
	h.subject = prefix + ".chat.msg."
	name := func(set *string, what string) {
		if *set == "" {
			*set = storeName(prefix, what)
		}
	}
	name(&h.cfg.Stream, "history")
	name(&h.cfg.Accounts, "accounts")
	name(&h.cfg.Rooms, "rooms")
	name(&h.cfg.Presence, "presence")

	ctx, cancel := context.WithTimeout(ctx, 4*h.cfg.RequestTimeout)
	defer cancel()
	st := h.cfg.Store
	var err error
	if h.history, err = st.Stream(ctx, service.StreamConfig{
		Name:              h.cfg.Stream,
		Description:       "shoal chat: messages by room",
		Subjects:          []string{h.subject + "*"},
		MaxMsgsPerSubject: int64(h.cfg.History),
	}); err != nil {
		return err
	}
	h.setEpoch(h.history.Created())
	buckets := []struct {
		kv   **service.KV
		name string
		desc string
	}{
		{&h.accounts, h.cfg.Accounts, "shoal chat: accounts"},
		{&h.rooms, h.cfg.Rooms, "shoal chat: rooms"},
		{&h.presence, h.cfg.Presence, "shoal chat: presence"},
	}
	for _, b := range buckets {
		if *b.kv, err = st.KV(ctx, service.BucketConfig{Name: b.name, Description: b.desc}); err != nil {
			return err
		}
	}
	loaded := []chan struct{}{make(chan struct{}), make(chan struct{})}
	for i, w := range []struct {
		kv    *service.KV
		apply func(service.Entry)
	}{{h.presence, h.mirror.applyPresence}, {h.rooms, h.mirror.applyRoom}} {
		watch, err := w.kv.Watch(ctx, ">")
		if err != nil {
			h.Stop()
			return err
		}
		h.watchers = append(h.watchers, watch)
		h.bg.Go(func() { h.mirror.follow(watch, w.apply, loaded[i]) })
	}
	for _, l := range loaded {
		select {
		case <-l:
		case <-ctx.Done():
			h.Stop()
			return fmt.Errorf("chat: loading presence: %w", ctx.Err())
		}
	}
	h.shards.started = time.Now()
	h.bg.Go(h.sweep)
	h.log.Info("chat: started", "stream", h.cfg.Stream, "epoch", h.Epoch(),
		"replicas", h.history.Replicas(), "history", h.cfg.History)
	return nil
}

// Stop ends the background work; the Service's Run calls it after the
// last event.
func (h *Handler) Stop() {
	h.stop()
	// In parallel: each waits for JetStream to confirm, seconds when it
	// is down.
	var wg sync.WaitGroup
	for _, w := range h.watchers {
		wg.Go(w.Stop)
	}
	wg.Wait()
	h.bg.Wait()
}

// Epoch returns the history stream's epoch: its creation time in unix
// nanoseconds, in decimal.
func (h *Handler) Epoch() string { return *h.epoch.Load() }

func (h *Handler) setEpoch(t time.Time) {
	e := strconv.FormatInt(t.UnixNano(), 10)
	h.epoch.Store(&e)
}

// Open greets a connection that a token bound to a user with a fresh
// token. Anonymous connections hear nothing until they register or log in.
func (h *Handler) Open(c *service.Conn) error {
	if u := c.User(); u != "" && validName(u, MaxUser) {
		h.welcome(c, nil, u)
	}
	return nil
}

// Message handles one client message.
func (h *Handler) Message(c *service.Conn, op service.Opcode, data []byte) {
	if op != service.Text {
		h.reply(c, errorReply{Type: TypeError, Code: CodeBadJSON, Message: "binary messages are not part of the protocol"})
		return
	}
	req, perr := decode(data)
	if perr == nil && known[req.Type] {
		switch u := c.User(); {
		case u == "":
			perr = failure(CodeUnauthorized, "register or login first")
		case !validName(u, MaxUser):
			// A token of another issuer sharing the key may name a user
			// the chat's keys cannot hold.
			perr = failure(CodeUnauthorized, "the token's user is not a chat user name")
		}
	}
	if perr != nil {
		h.fail(c, &req, perr)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	var err error
	switch req.Type {
	case TypeRegister:
		err = h.register(ctx, c, &req)
	case TypeLogin:
		err = h.login(ctx, c, &req)
	case TypeJoin:
		err = h.join(ctx, c, &req)
	case TypeSay:
		err = h.say(ctx, c, &req)
	case TypeLeave:
		err = h.leave(ctx, c, &req)
	case TypeWho:
		err = h.who(ctx, c, &req)
	case TypeRooms:
		h.reply(c, roomsReply{Type: TypeRooms, ID: req.ID, Rooms: h.mirror.roomList(MaxRoomsListed)})
	case TypeHistory:
		err = h.historyRequest(ctx, c, &req)
	case TypePing:
		h.reply(c, pongReply{Type: TypePong, ID: req.ID})
	}
	if err != nil {
		h.fail(c, &req, err)
	}
}

// Close forgets the connection: it leaves every room it was in.
func (h *Handler) Close(c *service.Conn, _ int, _ string) {
	if c.User() == "" {
		// Anonymous connections join nothing. (A connection bound by
		// identify carries its user on its close event.)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.RequestTimeout)
	defer cancel()
	if err := h.dropConn(ctx, c.ID()); err != nil {
		h.log.Warn("chat: forget closed connection", "conn", c.ID(), "err", err)
	}
}

// reply sends one reply to c.
func (h *Handler) reply(c *service.Conn, v any) {
	h.send(c, encode(v))
}

func (h *Handler) send(c *service.Conn, b []byte) {
	if err := c.Send(service.Text, b); err != nil {
		h.log.Warn("chat: send", "conn", c.ID(), "err", err)
	}
}

// fail sends the error reply for err: a protocol error as it is, anything
// else (storage, bus) as unavailable.
func (h *Handler) fail(c *service.Conn, req *request, err error) {
	var pe *protoError
	if !errors.As(err, &pe) {
		h.log.Warn("chat: request failed", "conn", c.ID(), "type", req.Type, "room", req.Room, "err", err)
		pe = failure(CodeUnavailable, "storage or bus unavailable, retry later")
	}
	r := errorReply{Type: TypeError, ID: req.ID, Code: pe.code, Message: pe.msg}
	if validName(req.Room, MaxRoom) {
		r.Room = req.Room
	}
	h.reply(c, r)
}

// requestID makes a message id unique across instances and restarts.
func (h *Handler) requestID() string {
	return h.instance + "-" + strconv.FormatUint(h.msgN.Add(1), 36)
}
