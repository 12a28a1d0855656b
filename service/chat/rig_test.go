package chat

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/auth"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service"
	"github.com/shoal-gw/shoal/service/chat/chattest"
	"github.com/shoal-gw/shoal/shard"
)

const waitLimit = 15 * time.Second

// key signs the tokens of the tests' chat and checks them at their
// shards' handshakes.
var key = auth.Key("0123456789abcdef0123456789abcdef")

// rig is a real NATS server with chat instances and shards on it.
type rig struct {
	t          testing.TB
	url        string
	nats       *bus.Embedded
	dir        string // the NATS store directory
	instances  []*instance
	shards     []*testShard
	cfg        Config // template for instances
	beat       time.Duration
	shardCfg   func(*shard.Config) // changes every shard's Config, if set
	maxPayload int32               // the NATS server's max_payload; 0: its default
	ncs        []*nats.Conn        // every connection made by connect
}

type instance struct {
	t      testing.TB
	h      *Handler
	svc    *service.Service
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type testShard struct {
	s    *shard.Shard
	nc   *nats.Conn
	addr string
}

type rigOption func(*rig)

// withConfig changes the template of every instance's Config.
func withConfig(f func(*Config)) rigOption { return func(r *rig) { f(&r.cfg) } }

// withShard changes the Config of every shard.
func withShard(f func(*shard.Config)) rigOption { return func(r *rig) { r.shardCfg = f } }

// withMaxPayload sets the NATS server's largest message.
func withMaxPayload(n int32) rigOption { return func(r *rig) { r.maxPayload = n } }

// withBeat sets the shards' heartbeat interval.
func withBeat(d time.Duration) rigOption { return func(r *rig) { r.beat = d } }

// newRig starts NATS, the chat instances and the shards.
func newRig(t testing.TB, instances, shards int, opts ...rigOption) *rig {
	t.Helper()
	// No rate limit unless a test sets one: tests say quickly.
	r := &rig{t: t, dir: t.TempDir(), cfg: Config{BcryptCost: bcrypt.MinCost, Rate: -1}}
	for _, o := range opts {
		o(r)
	}
	r.startNATS(-1)
	// Registered first, so it runs last: whichever server runs then stops
	// after everything that uses it.
	t.Cleanup(func() { r.nats.Shutdown() })
	for range instances {
		r.startInstance()
	}
	for range shards {
		r.startShard("")
	}
	return r
}

// startNATS starts the embedded NATS server on port (-1: any) with the
// rig's store directory.
func (r *rig) startNATS(port int) {
	r.t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{Port: port, StoreDir: r.dir, JetStream: true, MaxPayload: r.maxPayload})
	if err != nil {
		r.t.Fatalf("start NATS: %v", err)
	}
	r.nats, r.url = e, e.ClientURL()
}

// restartNATS stops the NATS server and starts it again on the same port
// with the same store: clients reconnect by themselves.
func (r *rig) restartNATS() {
	r.t.Helper()
	u, err := url.Parse(r.url)
	if err != nil {
		r.t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	r.nats.Shutdown()
	r.startNATS(port)
	// Messages published while a connection was away are lost when they
	// reach the server before their subscribers are back, as with any
	// NATS outage: wait until every connection is back, its
	// subscriptions with it.
	for _, nc := range r.ncs {
		waitFor(r.t, "a NATS connection back", func() bool {
			return nc.IsClosed() || nc.IsConnected() && nc.FlushTimeout(time.Second) == nil
		})
	}
}

func (r *rig) connect() *nats.Conn {
	r.t.Helper()
	nc, err := bus.Connect(bus.Config{URL: r.url, Name: r.t.Name()})
	if err != nil {
		r.t.Fatalf("connect NATS: %v", err)
	}
	r.t.Cleanup(nc.Close)
	r.ncs = append(r.ncs, nc)
	return nc
}

// startInstance runs one more chat instance on its own NATS connection,
// as a separate process would.
func (r *rig) startInstance() *instance {
	r.t.Helper()
	nc := r.connect()
	store, err := service.OpenStore(nc, service.StoreConfig{Timeout: r.cfg.RequestTimeout})
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := r.cfg
	cfg.Store, cfg.Tokens = store, key
	h, err := New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	svc, err := service.New(nc, service.Config{Name: "chat"}, h)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{t: r.t, h: h, svc: svc, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-in.done:
		r.t.Fatalf("chat instance: %v", err)
	case <-time.After(waitLimit):
		r.t.Fatal("chat instance not ready")
	}
	r.t.Cleanup(in.stop)
	r.instances = append(r.instances, in)
	return in
}

// stop ends the instance and waits for it; safe to call twice.
func (in *instance) stop() {
	in.once.Do(func() {
		in.cancel()
		if err := <-in.done; err != nil {
			in.t.Errorf("chat instance: %v", err)
		}
	})
}

// startShard runs a shard; addr "" picks a port, an address already used
// by another shard shares its port (SO_REUSEPORT).
func (r *rig) startShard(addr string) *testShard {
	r.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	nc := r.connect()
	id := fmt.Sprintf("s%d", len(r.shards)+1)
	cfg := shard.Config{
		ID:                id,
		Addr:              addr,
		NATS:              nc,
		Services:          []string{"chat"},
		HeartbeatInterval: r.beat,
		MaxMessageRate:    -1,
		Authenticate:      authenticate,
	}
	if r.shardCfg != nil {
		r.shardCfg(&cfg)
	}
	s, err := shard.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(s.Close)
	ts := &testShard{s: s, nc: nc, addr: s.Addr().String()}
	r.shards = append(r.shards, ts)
	return ts
}

// authenticate is the handshake check of the tests' shards: no token is
// an anonymous connection, a bad token is refused with 401.
func authenticate(req *acceptor.Request) (string, error) {
	tok := req.Token()
	if tok == "" {
		return "", nil
	}
	return key.Verify(tok, req.Service, time.Now())
}

// crash kills a shard as a crash would: no close events, no "down".
func (ts *testShard) crash() {
	ts.nc.Close()
	ts.s.Close()
}

// frame is any server message, decoded.
type frame = chattest.Frame

// client is a chattest.Client that fails its test on errors. A client's
// methods are for one goroutine at a time; the ...Err ones are for
// goroutines other than the test's.
type client struct {
	*chattest.Client
	t testing.TB
}

// dial connects to a shard's /ws/chat, with token if not "".
func (r *rig) dial(ts *testShard, token string) *client {
	r.t.Helper()
	c, err := dialChat(ts.addr, token)
	if err != nil {
		r.t.Fatalf("dial %s: %v", ts.addr, err)
	}
	c.t = r.t
	r.t.Cleanup(c.close)
	return c
}

func dialChat(addr, token string) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := chattest.Dial(ctx, "ws://"+addr, token)
	if err != nil {
		return nil, err
	}
	return &client{Client: c}, nil
}

func (c *client) close() { _ = c.Close() }

// sendRaw sends one text frame.
func (c *client) sendRaw(s string) {
	c.t.Helper()
	if err := c.Send(s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// await returns the first frame, earlier ones queued included, that
// matches; the others stay queued.
func (c *client) await(what string, match func(frame) bool) frame {
	c.t.Helper()
	f, err := c.awaitErr(what, match)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

func (c *client) awaitErr(what string, match func(frame) bool) (frame, error) {
	return c.Await(what, waitLimit, match)
}

func (c *client) callErr(msg map[string]any) (frame, error) { return c.Call(waitLimit, msg) }

// call sends a request with a fresh numeric id and waits for its answer.
func (c *client) call(msg map[string]any) frame {
	c.t.Helper()
	f, err := c.callErr(msg)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

// mustCall is call that fails the test unless the answer has type want.
func (c *client) mustCall(want string, msg map[string]any) frame {
	c.t.Helper()
	f := c.call(msg)
	if f.Type != want {
		c.t.Fatalf("%s: %v answered %s, want %s", c.User, msg, f.Raw, want)
	}
	return f
}

// wantError is call that fails the test unless the answer is an error
// with code.
func (c *client) wantError(code string, msg map[string]any) frame {
	c.t.Helper()
	f := c.call(msg)
	if f.Type != TypeError || f.Code != code {
		c.t.Fatalf("%s: %v answered %s, want error %s", c.User, msg, f.Raw, code)
	}
	return f
}

// presence waits for a presence event in room about user.
func (c *client) presence(room, user, event string) frame {
	c.t.Helper()
	return c.await("presence "+event+" of "+user+" in "+room, func(f frame) bool {
		return f.Type == TypePresence && f.Room == room && f.User == user && f.Event == event
	})
}

// message waits for a live message in room with text.
func (c *client) message(room, text string) frame {
	c.t.Helper()
	return c.await("message "+text+" in "+room, func(f frame) bool {
		return f.Type == TypeMessage && f.Room == room && f.Text == text
	})
}

// none fails if a frame matching has arrived: for things that must not
// happen, checked after a later thing that must.
func (c *client) none(what string, match func(frame) bool) {
	c.t.Helper()
	for _, f := range c.Pending() {
		if match(f) {
			c.t.Fatalf("%s: unexpected %s: %s", c.User, what, f.Raw)
		}
	}
}

// register signs up a new user on an anonymous connection to ts.
func (r *rig) register(ts *testShard, user string) *client {
	r.t.Helper()
	c := r.dial(ts, "")
	c.User = user
	f := c.mustCall(TypeWelcome, map[string]any{"type": "register", "user": user, "password": "password-" + user})
	if f.User != user || f.Token == "" {
		r.t.Fatalf("welcome %s", f.Raw)
	}
	c.Token = f.Token
	return c
}

// tab opens another connection of c's user with its token and waits for
// the welcome.
func (r *rig) tab(ts *testShard, c *client) *client {
	r.t.Helper()
	tab := r.dial(ts, c.Token)
	tab.User = c.User
	f := tab.await("welcome", func(f frame) bool { return f.Type == TypeWelcome })
	if f.User != c.User {
		r.t.Fatalf("welcome on a token connection: %s", f.Raw)
	}
	tab.Token = f.Token
	return tab
}

// join joins room and returns the joined reply.
func (c *client) join(room string) frame {
	c.t.Helper()
	return c.mustCall(TypeJoined, map[string]any{"type": "join", "room": room})
}

// say says text in room and returns the sent reply.
func (c *client) say(room, text string) frame {
	c.t.Helper()
	return c.mustCall(TypeSent, map[string]any{"type": "say", "room": room, "text": text})
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// conns returns the connections of user in room, as the first instance's
// mirror has them.
func (r *rig) conns(room, user string) []string {
	m := r.instances[0].h.mirror
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.members[room][user])
}
