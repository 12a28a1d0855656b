package bustest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a NATS cluster running inside the test process.
type Cluster struct {
	Servers []*server.Server
}

// ClientURLs returns every server's client URL, comma separated, as a
// NATS client takes them.
func (c *Cluster) ClientURLs() string {
	var s string
	for i, srv := range c.Servers {
		if i > 0 {
			s += ","
		}
		s += srv.ClientURL()
	}
	return s
}

// RunCluster starts n NATS servers with JetStream on loopback, joined by
// routes into one cluster, and waits until JetStream has a meta leader.
// They stop when the test ends.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	// Every server lists every route, as a real deployment does, so the
	// JetStream meta group knows its size from the start. The ports are
	// picked free first; the short window before the servers bind them is
	// harmless on loopback.
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: "127.0.0.1:" + strconv.Itoa(p)})
	}
	dir := t.TempDir()
	c := &Cluster{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   filepath.Join(dir, strconv.Itoa(i)),
			NoSigs:     true,
			NoLog:      true,
			Cluster: server.ClusterOpts{
				Name: "test",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: routes,
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("cluster server %d: %v", i, err)
		}
		srv.Start()
		t.Cleanup(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		})
		c.Servers = append(c.Servers, srv)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, srv := range c.Servers {
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("cluster server %s not ready", srv.Name())
		}
	}
	for {
		leader := false
		for _, srv := range c.Servers {
			if srv.JetStreamIsLeader() {
				leader = true
			}
		}
		if leader && c.routed(n-1) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal("cluster: no JetStream meta leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// routed reports whether every server has routes to the others.
func (c *Cluster) routed(peers int) bool {
	for _, srv := range c.Servers {
		if srv.NumRoutes() < peers {
			return false
		}
	}
	return true
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
