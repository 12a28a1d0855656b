package supervisor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/bus/bustest"
)

func TestNewChecksInstances(t *testing.T) {
	for _, c := range []struct {
		name      string
		services  []string
		instances map[string]int
	}{
		{"named twice", []string{"echo", "echo"}, nil},
		{"zero", []string{"echo"}, map[string]int{"echo": 0}},
		{"negative", []string{"echo"}, map[string]int{"echo": -1}},
		{"not a service", []string{"echo"}, map[string]int{"chat": 2}},
	} {
		_, err := New(Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Services: c.services, Instances: c.instances})
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", c.name, err)
		}
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Services: []string{"echo", "chat"}, Instances: map[string]int{"chat": 3}}); err != nil {
		t.Fatal(err)
	}
}

// awaitServices returns only once every process of every service holds a
// subscription in its queue group, told apart by their bus client names:
// interest in the subject alone is there as soon as the first one is.
func TestAwaitServicesWaitsForEveryProcess(t *testing.T) {
	e := bustest.RunServer(t)
	s, err := New(Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Services: []string{"chat", "echo"}, Instances: map[string]int{"chat": 3}})
	if err != nil {
		t.Fatal(err)
	}
	s.embedded = e
	// Slots as start makes them, each with a stand-in process of its own pid.
	pid := 1000
	for _, name := range s.cfg.Services {
		for i := range s.instances(name) {
			sl := s.newSlot(roleService, len(s.svcs), i, name)
			pid++
			sl.cur = &proc{cmd: &exec.Cmd{Process: &os.Process{Pid: pid}}, exited: make(chan struct{})}
			s.svcs = append(s.svcs, sl)
		}
	}
	if len(s.svcs) != 4 {
		t.Fatalf("%d service slots, want 4", len(s.svcs))
	}
	join := func(name string, pid int, queue string) {
		t.Helper()
		nc, err := bus.Connect(bus.Config{URL: e.ClientURL(), Name: bus.ServiceClientName(name, pid)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		if _, err := nc.QueueSubscribe(bus.Subjects{}.Service(name), queue, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		s.awaitServices(ctx, time.Minute)
		close(done)
	}()
	all := []string{"service chat 0", "service chat 1", "service chat 2", "service echo 0"}
	if got := s.unsubscribed(); !slices.Equal(got, all) {
		t.Fatalf("before any subscribed: waiting for %q, want %q", got, all)
	}
	// Neither a process of another pid (a previous life of a slot) nor a
	// subscription outside the queue group counts.
	join("chat", 999, "chat")
	join("chat", 1002, "elsewhere")
	join("chat", 1001, "chat")
	join("echo", 1004, "echo")
	if got, want := s.unsubscribed(), []string{"service chat 1", "service chat 2"}; !slices.Equal(got, want) {
		t.Fatalf("waiting for %q, want %q", got, want)
	}
	join("chat", 1003, "chat")
	if got, want := s.unsubscribed(), []string{"service chat 1"}; !slices.Equal(got, want) {
		t.Fatalf("waiting for %q, want %q", got, want)
	}
	select {
	case <-done:
		t.Fatal("awaitServices returned while chat 1 had not subscribed")
	default:
	}
	join("chat", 1002, "chat")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("awaitServices still waiting for %q", s.unsubscribed())
	}
}

// Children run the binary at the path serve was started by, even when
// that path is a symlink: pointing it at a new version and sending SIGHUP
// upgrades the workers.
func TestInvokedPathKeepsSymlinks(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "shoal")
	if err := os.Symlink(self, link); err != nil {
		t.Fatal(err)
	}
	saved := os.Args[0]
	t.Cleanup(func() { os.Args[0] = saved })
	for _, c := range []struct{ arg0, want string }{
		{link, link},
		{"no-such-binary-on-path", self},
		{filepath.Join(t.TempDir(), "elsewhere"), self},
	} {
		os.Args[0] = c.arg0
		if got, err := invokedPath(); err != nil || got != c.want {
			t.Errorf("argv[0] %q: %q %v, want %q", c.arg0, got, err, c.want)
		}
	}
}

func TestProcsShare(t *testing.T) {
	for _, tc := range []struct {
		cpus    CPUs
		workers int
		want    int
	}{
		{CPUs{Affinity: 2}, 2, 1},
		{CPUs{Affinity: 8}, 2, 4},
		{CPUs{Affinity: 8}, 3, 2},
		{CPUs{Affinity: 2}, 4, 1},
		{CPUs{Affinity: 8, Quota: 2.5}, 1, 3},
		{CPUs{Affinity: 1}, 0, 1},
	} {
		if got := ProcsShare(tc.cpus, tc.workers); got != tc.want {
			t.Errorf("ProcsShare(%+v, %d) = %d, want %d", tc.cpus, tc.workers, got, tc.want)
		}
	}
}
