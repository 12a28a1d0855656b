// Command nbio is a bench peer built on github.com/lesismal/nbio: an
// event-driven server whose pollers parse frames and run handlers on a
// shared pool, with no goroutine per connection. Rooms are a map guarded by
// one RWMutex and fan-out writes to each member in turn.
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

	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/shoal-gw/shoal/bench/peers/internal/benchproto"
)

// maxWriteBuffer is how much unsent data a connection may pile up before nbio
// closes it; it is the slow-client policy of this peer.
const maxWriteBuffer = 4 << 20

func main() {
	addr := flag.String("addr", benchproto.DefaultAddr, "listen address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*addr, log); err != nil {
		log.Error("nbio peer failed", "err", err)
		os.Exit(1)
	}
}

func run(addr string, log *slog.Logger) error {
	// nbio logs to stdout by default, which would break the one-line contract.
	logging.Output = os.Stderr
	logging.SetLevel(logging.LevelError)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	rs := newRooms()
	mux := http.NewServeMux()
	mux.HandleFunc(benchproto.EchoPath, upgradeHandler(newEchoUpgrader(), log))
	mux.HandleFunc(benchproto.FanoutPath, upgradeHandler(rs.upgrader(), log))

	var (
		lnMu sync.Mutex
		lnAt net.Addr
	)
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network:                 "tcp",
		Addrs:                   []string{addr},
		Handler:                 mux,
		ReleaseWebsocketPayload: true,
		MaxWriteBufferSize:      maxWriteBuffer,
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err == nil {
				lnMu.Lock()
				lnAt = ln.Addr()
				lnMu.Unlock()
			}
			return ln, err
		},
	})
	if err := engine.Start(); err != nil {
		return err
	}
	lnMu.Lock()
	fmt.Printf("listening %s\n", lnAt)
	lnMu.Unlock()

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Shutdown closes the listener, then every connection, then the pollers.
	if err := engine.Shutdown(sctx); err != nil {
		log.Warn("nbio shutdown incomplete", "err", err)
	}
	return nil
}

func newUpgrader() *websocket.Upgrader {
	u := websocket.NewUpgrader()
	u.CheckOrigin = func(*http.Request) bool { return true }
	u.EnableCompression(false)
	u.MessageLengthLimit = benchproto.ReadLimit
	// The other peers keep idle clients; nbio's default 120s idle deadline would not.
	u.KeepaliveTime = 0
	return u
}

func newEchoUpgrader() *websocket.Upgrader {
	u := newUpgrader()
	u.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) {
		_ = c.WriteMessage(mt, data)
	})
	return u
}

func upgradeHandler(u *websocket.Upgrader, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := u.Upgrade(w, r, nil); err != nil {
			log.Debug("upgrade failed", "err", err)
		}
	}
}

type rooms struct {
	mu      sync.RWMutex
	byName  map[string]map[*websocket.Conn]struct{}
	members map[*websocket.Conn]string // conn -> its room
}

func newRooms() *rooms {
	return &rooms{
		byName:  make(map[string]map[*websocket.Conn]struct{}),
		members: make(map[*websocket.Conn]string),
	}
}

func (rs *rooms) upgrader() *websocket.Upgrader {
	u := newUpgrader()
	u.OnMessage(rs.onMessage)
	u.OnClose(func(c *websocket.Conn, _ error) { rs.leave(c) })
	return u
}

// onMessage runs serially per connection (nbio queues a connection's jobs), so
// the first-message check cannot race with a second message of the same conn.
func (rs *rooms) onMessage(c *websocket.Conn, mt websocket.MessageType, data []byte) {
	rs.mu.RLock()
	room, joined := rs.members[c]
	if joined {
		// Writes only copy into the socket or nbio's per-conn buffer, so holding
		// the read lock across the loop is cheap and keeps members stable.
		for m := range rs.byName[room] {
			_ = m.WriteMessage(mt, data)
		}
		rs.mu.RUnlock()
		return
	}
	rs.mu.RUnlock()

	room, err := benchproto.ParseJoin(mt == websocket.TextMessage, data)
	if err != nil {
		_ = c.WriteClose(benchproto.ClosePolicyViolation, err.Error())
		_ = c.Close()
		return
	}
	rs.mu.Lock()
	set := rs.byName[room]
	if set == nil {
		set = make(map[*websocket.Conn]struct{})
		rs.byName[room] = set
	}
	set[c] = struct{}{}
	rs.members[c] = room
	// Written under the write lock: no fan-out can reach c before this reply.
	// OnClose runs asynchronously in nbio, so a failed write cannot re-enter here.
	_ = c.WriteMessage(websocket.TextMessage, benchproto.Joined(room))
	rs.mu.Unlock()
}

func (rs *rooms) leave(c *websocket.Conn) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	room, ok := rs.members[c]
	if !ok {
		return
	}
	delete(rs.members, c)
	set := rs.byName[room]
	delete(set, c)
	if len(set) == 0 {
		delete(rs.byName, room)
	}
}
