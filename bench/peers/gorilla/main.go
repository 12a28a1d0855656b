// Command gorilla is a bench peer built on github.com/gorilla/websocket with
// the classic goroutine-per-connection design: every connection has a read
// loop and a write loop fed by a buffered channel, and one hub goroutine owns
// the rooms (register, unregister and broadcast channels).
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

	"github.com/gorilla/websocket"

	"github.com/shoal-gw/shoal/bench/peers/internal/benchproto"
)

const (
	// writeWait bounds one frame write so a stalled peer cannot pin a writer forever.
	writeWait = 10 * time.Second
	// pongWait is how long a connection may stay silent (no pong, no data) before it is dropped.
	pongWait = 60 * time.Second
	// pingPeriod must be below pongWait so a healthy client always answers in time.
	pingPeriod = pongWait * 9 / 10
	// sendQueue is the per-connection backlog; a client that lets it fill is dropped.
	sendQueue = 256
	// broadcastQueue decouples publishers from the hub for short bursts.
	broadcastQueue = 1024
)

func main() {
	addr := flag.String("addr", benchproto.DefaultAddr, "listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, log); err != nil {
		log.Error("gorilla peer failed", "err", err)
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
	srv := newServer(log)
	httpSrv := &http.Server{Handler: srv.mux(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	fmt.Printf("listening %s\n", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		srv.shutdown()
		return err
	}
	// Hijacked connections are invisible to http.Server, so they are closed separately.
	err = httpSrv.Close()
	<-serveErr
	srv.shutdown()
	return err
}

type server struct {
	log      *slog.Logger
	upgrader websocket.Upgrader
	hub      *hub

	mu      sync.Mutex
	closing bool
	conns   map[*websocket.Conn]struct{}
	wg      sync.WaitGroup // read and write loops
	hubDone chan struct{}
}

func newServer(log *slog.Logger) *server {
	s := &server{
		log: log,
		upgrader: websocket.Upgrader{
			CheckOrigin: func(*http.Request) bool { return true },
		},
		hub:     newHub(),
		conns:   make(map[*websocket.Conn]struct{}),
		hubDone: make(chan struct{}),
	}
	go func() {
		defer close(s.hubDone)
		s.hub.run()
	}()
	return s
}

func (s *server) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc(benchproto.EchoPath, func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, false) })
	m.HandleFunc(benchproto.FanoutPath, func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, true) })
	return m
}

func (s *server) serveWS(w http.ResponseWriter, r *http.Request, fanout bool) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade already answered with an HTTP error.
	}
	if !s.track(conn) {
		_ = conn.Close()
		return
	}
	c := &client{
		srv:    s,
		conn:   conn,
		send:   make(chan message, sendQueue),
		dead:   make(chan struct{}),
		fanout: fanout,
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		c.writePump()
	}()
	go func() {
		defer s.wg.Done()
		defer s.untrack(conn)
		c.readPump()
	}()
}

func (s *server) track(conn *websocket.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[conn] = struct{}{}
	return true
}

func (s *server) untrack(conn *websocket.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
}

// shutdown closes every connection, waits for their loops, then stops the hub.
// The hub must outlive the loops because exiting readers unregister through it.
func (s *server) shutdown() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	goingAway := websocket.FormatCloseMessage(benchproto.CloseGoingAway, "server stopping")
	for _, c := range conns {
		_ = c.WriteControl(websocket.CloseMessage, goingAway, time.Now().Add(time.Second))
		_ = c.Close()
	}
	s.wg.Wait()
	close(s.hub.quit)
	<-s.hubDone
}

type message struct {
	typ  int
	data []byte
}

type client struct {
	srv    *server
	conn   *websocket.Conn
	send   chan message
	dead   chan struct{} // closed when writePump returns
	fanout bool
	room   string // set by readPump before registering; read by the hub afterwards
}

// readPump owns closing c.send until the client is registered with the hub;
// from then on the hub owns it, so a slow-client drop and a disconnect never
// close it twice.
func (c *client) readPump() {
	registered := false
	defer func() {
		if registered {
			c.srv.hub.unregister <- c
		} else {
			close(c.send)
		}
		// The writer closes the conn once it has flushed what is queued,
		// including a 1008 close frame.
	}()

	c.conn.SetReadLimit(benchproto.ReadLimit)
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(pongWait))
	})

	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		switch {
		case !c.fanout:
			select {
			case c.send <- message{typ, data}:
			case <-c.dead:
				return
			}
		case !registered:
			room, err := benchproto.ParseJoin(typ == websocket.TextMessage, data)
			if err != nil {
				closeMsg := websocket.FormatCloseMessage(benchproto.ClosePolicyViolation, err.Error())
				select {
				case c.send <- message{websocket.CloseMessage, closeMsg}:
				case <-c.dead:
				}
				return
			}
			c.room = room
			c.srv.hub.register <- c
			registered = true
		default:
			c.srv.hub.broadcast <- roomMessage{room: c.room, msg: message{typ, data}}
		}
	}
}

func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		_ = c.conn.Close()
		close(c.dead)
	}()
	for {
		select {
		case m, ok := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				_ = c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(m.typ, m.data); err != nil || m.typ == websocket.CloseMessage {
				return
			}
		case <-ticker.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

type roomMessage struct {
	room string
	msg  message
}

type hub struct {
	register   chan *client
	unregister chan *client
	broadcast  chan roomMessage
	quit       chan struct{}
	rooms      map[string]map[*client]struct{} // touched only by run
}

func newHub() *hub {
	return &hub{
		// register is unbuffered so a reader's later broadcasts cannot overtake its join.
		register:   make(chan *client),
		unregister: make(chan *client),
		broadcast:  make(chan roomMessage, broadcastQueue),
		quit:       make(chan struct{}),
		rooms:      make(map[string]map[*client]struct{}),
	}
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			members := h.rooms[c.room]
			if members == nil {
				members = make(map[*client]struct{})
				h.rooms[c.room] = members
			}
			members[c] = struct{}{}
			// Queued by the hub itself, so the reply precedes every broadcast that
			// reaches c: membership is effective when the client sees it.
			h.deliver(c, members, message{websocket.TextMessage, benchproto.Joined(c.room)})
		case c := <-h.unregister:
			if members := h.rooms[c.room]; members != nil {
				if _, ok := members[c]; ok {
					h.remove(c, members)
				}
			}
		case rm := <-h.broadcast:
			members := h.rooms[rm.room]
			for c := range members {
				h.deliver(c, members, rm.msg)
			}
		case <-h.quit:
			return
		}
	}
}

// deliver never blocks the hub: a client whose queue is full is dropped, and
// closing its send channel makes its writer close the connection.
func (h *hub) deliver(c *client, members map[*client]struct{}, m message) {
	select {
	case c.send <- m:
	default:
		h.remove(c, members)
	}
}

func (h *hub) remove(c *client, members map[*client]struct{}) {
	delete(members, c)
	close(c.send)
	if len(members) == 0 {
		delete(h.rooms, c.room)
	}
}
