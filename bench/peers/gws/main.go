// Command gws is a bench peer built on github.com/lxzan/gws with its event
// handler API: one read goroutine per connection calls OnMessage serially,
// and fan-out hands one pre-framed message to every member's write queue
// through gws.Broadcaster.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lxzan/gws"

	"github.com/shoal-gw/shoal/bench/peers/internal/benchproto"
)

// roomKey is the session key under which a fanout connection keeps its room.
const roomKey = "room"

func main() {
	addr := flag.String("addr", benchproto.DefaultAddr, "listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, log); err != nil {
		log.Error("gws peer failed", "err", err)
		os.Exit(1)
	}
}

func run(addr string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := newServer(log)
	httpSrv := &http.Server{Handler: s.mux(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	fmt.Printf("listening %s\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		s.shutdown()
		return err
	}
	// Upgraded connections are hijacked, so http.Server no longer sees them.
	err = httpSrv.Close()
	<-serveErr
	s.shutdown()
	return err
}

func serverOption(log *slog.Logger) *gws.ServerOption {
	return &gws.ServerOption{
		ParallelEnabled:    false,
		ReadMaxPayloadSize: benchproto.ReadLimit,
		Logger:             slogAdapter{log},
		Recovery:           gws.Recovery,
		// PermessageDeflate stays disabled; Authorize is nil so no origin check happens.
	}
}

type server struct {
	log    *slog.Logger
	echo   *gws.Upgrader
	fanout *gws.Upgrader
	rooms  *rooms

	mu      sync.Mutex
	closing bool
	conns   map[*gws.Conn]struct{}
	wg      sync.WaitGroup // read loops
}

func newServer(log *slog.Logger) *server {
	s := &server{log: log, rooms: newRooms(), conns: make(map[*gws.Conn]struct{})}
	s.echo = gws.NewUpgrader(echoHandler{s: s}, serverOption(log))
	s.fanout = gws.NewUpgrader(fanoutHandler{s: s}, serverOption(log))
	return s
}

func (s *server) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc(benchproto.EchoPath, func(w http.ResponseWriter, r *http.Request) { s.serve(s.echo, w, r) })
	m.HandleFunc(benchproto.FanoutPath, func(w http.ResponseWriter, r *http.Request) { s.serve(s.fanout, w, r) })
	return m
}

func (s *server) serve(u *gws.Upgrader, w http.ResponseWriter, r *http.Request) {
	conn, err := u.Upgrade(w, r)
	if err != nil {
		return // Upgrade already answered and closed.
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = conn.WriteClose(benchproto.CloseGoingAway, nil)
		return
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		conn.ReadLoop()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
}

func (s *server) shutdown() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	conns := make([]*gws.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.WriteClose(benchproto.CloseGoingAway, []byte("server stopping"))
	}
	s.wg.Wait()
}

type echoHandler struct {
	gws.BuiltinEventHandler
	s *server
}

func (h echoHandler) OnMessage(c *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	_ = c.WriteMessage(msg.Opcode, msg.Bytes())
}

type fanoutHandler struct {
	gws.BuiltinEventHandler
	s *server
}

// OnMessage is called serially per connection (ParallelEnabled is false), so
// the first-message check cannot race with a second message of the same conn.
func (h fanoutHandler) OnMessage(c *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	if v, ok := c.Session().Load(roomKey); ok {
		h.s.rooms.publish(v.(string), msg.Opcode, msg.Bytes())
		return
	}
	room, err := benchproto.ParseJoin(msg.Opcode == gws.OpcodeText, msg.Bytes())
	if err != nil {
		_ = c.WriteClose(benchproto.ClosePolicyViolation, []byte(err.Error()))
		return
	}
	c.Session().Store(roomKey, room)
	h.s.rooms.join(room, c)
}

func (h fanoutHandler) OnClose(c *gws.Conn, _ error) {
	if v, ok := c.Session().Load(roomKey); ok {
		h.s.rooms.leave(v.(string), c)
	}
}

type rooms struct {
	mu     sync.RWMutex
	byName map[string]map[*gws.Conn]struct{}
}

func newRooms() *rooms {
	return &rooms{byName: make(map[string]map[*gws.Conn]struct{})}
}

func (rs *rooms) join(room string, c *gws.Conn) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	set := rs.byName[room]
	if set == nil {
		set = make(map[*gws.Conn]struct{})
		rs.byName[room] = set
	}
	set[c] = struct{}{}
	// Queued under the write lock on the same queue broadcasts use, so the
	// reply precedes every fan-out that can reach c.
	c.WriteAsync(gws.OpcodeText, benchproto.Joined(room), nil)
}

func (rs *rooms) leave(room string, c *gws.Conn) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	set := rs.byName[room]
	delete(set, c)
	if len(set) == 0 {
		delete(rs.byName, room)
	}
}

// publish frames the payload once; the frame is built during the first
// Broadcast call, so the pooled message buffer may be released on return.
func (rs *rooms) publish(room string, op gws.Opcode, payload []byte) {
	b := gws.NewBroadcaster(op, payload)
	rs.mu.RLock()
	for c := range rs.byName[room] {
		_ = b.Broadcast(c)
	}
	rs.mu.RUnlock()
	_ = b.Close()
}

type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Error(v ...any) { a.log.Error(fmt.Sprint(v...)) }
