package supervisor

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/shoal-gw/shoal/acceptor"
)

func closeFd(fd int) { _ = unix.Close(fd) }

// reservePort resolves a ":0" gateway address to one free port for every
// worker, holding it with a bound socket that never listens.
func (s *Supervisor) reservePort() error {
	ap, err := acceptor.ParseAddr(s.cfg.Addr)
	if err != nil {
		return err
	}
	if ap.Port() != 0 {
		s.addr = ap.String()
		return nil
	}
	fd, bound, err := acceptor.Reserve(s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	s.reserved = fd
	s.addr = bound.String()
	return nil
}

// Proc describes one process of the tree, as /procs lists them.
type Proc struct {
	// Role is "supervisor", "worker" or "service".
	Role string `json:"role"`
	PID  int    `json:"pid"`
	// Slot is a worker's number, or a service process's number among the
	// processes of its service (0 to --services NAME=N minus 1).
	Slot    int    `json:"slot"`
	Shard   string `json:"shard,omitempty"`
	Service string `json:"service,omitempty"`
	// Restarts counts the times the slot's process died and was started
	// again.
	Restarts int `json:"restarts"`
}

// Procs lists the supervisor and its live children.
func (s *Supervisor) Procs() []Proc {
	s.mu.Lock()
	slots := append(append([]*slot(nil), s.workers...), s.svcs...)
	s.mu.Unlock()
	list := []Proc{{Role: "supervisor", PID: os.Getpid()}}
	for _, sl := range slots {
		sl.mu.Lock()
		p, restarts := sl.cur, sl.restarts
		sl.mu.Unlock()
		if p == nil {
			continue
		}
		select {
		case <-p.exited:
			continue
		default:
		}
		list = append(list, Proc{
			Role:     string(sl.role),
			PID:      p.cmd.Process.Pid,
			Slot:     sl.index,
			Shard:    p.shard,
			Service:  sl.name,
			Restarts: restarts,
		})
	}
	return list
}

func (s *Supervisor) startAdmin() error {
	if s.cfg.Admin == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&shardCollector{s: s})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /procs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Procs())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	dir, temp, err := debugDirFor(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.debugDir, s.debugTmp = dir, temp
	s.debugRoutes(mux)
	ln, err := net.Listen("tcp", s.cfg.Admin)
	if err != nil {
		return fmt.Errorf("supervisor: admin: %w", err)
	}
	if s.cfg.AdminToken == "" && !isLoopback(ln.Addr()) {
		s.log.Warn("admin endpoint reachable beyond loopback without a token: set --admin-token-file", "admin", ln.Addr().String())
	}
	s.adminLn = ln
	s.admin = &http.Server{Handler: requireToken(s.cfg.AdminToken, mux), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.admin.Serve(ln) }()
	return nil
}

// shardCollector turns the workers' latest life records into metrics, so
// that one scrape of the supervisor covers every worker.
type shardCollector struct{ s *Supervisor }

var (
	labels       = []string{"shard", "slot"}
	descConns    = prometheus.NewDesc("shoal_connections", "WebSocket connections held by a worker.", labels, nil)
	descRooms    = prometheus.NewDesc("shoal_rooms", "Rooms with members on a worker.", labels, nil)
	descUpgrades = prometheus.NewDesc("shoal_upgrades_total", "Connections upgraded to WebSocket.", labels, nil)
	descRejected = prometheus.NewDesc("shoal_handshakes_rejected_total", "Handshakes refused, by reason.", append(labels, "reason"), nil)
	descFrames   = prometheus.NewDesc("shoal_frames_total", "WebSocket frames, by direction (in: messages and control frames).", append(labels, "direction"), nil)
	descWrites   = prometheus.NewDesc("shoal_socket_writes_total", "Write syscalls on client sockets; frames out over writes is the frames each carried.", labels, nil)
	descBytes    = prometheus.NewDesc("shoal_bytes_total", "Bytes on client sockets, by direction.", append(labels, "direction"), nil)
	descMessages = prometheus.NewDesc("shoal_messages_total", "Messages, by direction (out counts each delivery).", append(labels, "direction"), nil)
	descCloses   = prometheus.NewDesc("shoal_closes_total", "Connections ended, by close code.", append(labels, "code"), nil)
	descSrvClose = prometheus.NewDesc("shoal_server_closes_total", "Connections a worker closed on its own, by reason (slow_consumer, flood, idle, too_big, protocol, invalid_utf8, bus_down).", append(labels, "reason"), nil)
	descDropped  = prometheus.NewDesc("shoal_messages_dropped_total", "Messages dropped, by reason: rate_limit (from clients past their rate), queue_full (to slow clients of drop-oldest services).", append(labels, "reason"), nil)
	descBusErr   = prometheus.NewDesc("shoal_bus_errors_total", "Failed bus operations on a worker.", labels, nil)
	descBusDrop  = prometheus.NewDesc("shoal_bus_dropped_total", "Bus messages dropped because a worker fell behind.", labels, nil)
	descStalls   = prometheus.NewDesc("shoal_read_stalls_total", "Times a worker stopped reading its clients until its bus inbox drained.", labels, nil)
	descRestarts = prometheus.NewDesc("shoal_child_restarts_total", "Children restarted after dying.", []string{"role", "service", "slot"}, nil)
	descLastBeat = prometheus.NewDesc("shoal_worker_heartbeat_age_seconds", "Time since a worker's last life record.", labels, nil)
)

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descRooms, descUpgrades, descRejected, descFrames, descWrites, descBytes, descMessages, descCloses, descSrvClose, descDropped, descBusErr, descBusDrop, descStalls, descRestarts, descLastBeat} {
		ch <- d
	}
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	workers := append([]*slot(nil), s.workers...)
	svcs := append([]*slot(nil), s.svcs...)
	s.mu.Unlock()
	for _, sl := range append(workers, svcs...) {
		sl.mu.Lock()
		restarts := sl.restarts
		sl.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(restarts), string(sl.role), sl.name, strconv.Itoa(sl.index))
	}
	for _, sl := range workers {
		p := sl.current()
		if p == nil {
			continue
		}
		s.mu.Lock()
		rec, ok := s.life[p.shard]
		s.mu.Unlock()
		if !ok {
			continue
		}
		lv := []string{rec.Shard, strconv.Itoa(sl.index)}
		st := rec.Stats
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(lv, extra...)...)
		}
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(lv, extra...)...)
		}
		gauge(descConns, float64(st.Conns))
		gauge(descRooms, float64(st.Rooms))
		gauge(descLastBeat, time.Since(rec.Time).Seconds())
		counter(descUpgrades, st.Upgrades)
		for reason, n := range st.Rejected {
			counter(descRejected, n, reason)
		}
		counter(descFrames, st.FramesIn, "in")
		counter(descFrames, st.FramesOut, "out")
		counter(descWrites, st.Writes)
		counter(descBytes, st.BytesIn, "in")
		counter(descBytes, st.BytesOut, "out")
		counter(descMessages, st.MessagesIn, "in")
		counter(descMessages, st.MessagesOut, "out")
		for code, n := range st.Closes {
			counter(descCloses, n, code)
		}
		for reason, n := range st.ServerCloses {
			counter(descSrvClose, n, reason)
		}
		for reason, n := range st.Dropped {
			counter(descDropped, n, reason)
		}
		counter(descBusErr, st.BusErrors)
		counter(descBusDrop, st.BusDropped)
		counter(descStalls, st.ReadStalls)
	}
}

// requireToken lets a request through when it carries the bearer token,
// or when no token is configured. /healthz stays open for probes: it says
// nothing but "ok".
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shoal admin"`)
			http.Error(w, "admin endpoint: missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
