package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-gw/shoal/bus/bustest"
	"github.com/shoal-gw/shoal/service"
	"github.com/shoal-gw/shoal/service/echo"
	"github.com/shoal-gw/shoal/service/fanout"
	"github.com/shoal-gw/shoal/shard"
)

// startShoal runs a shard serving echo and fanout, and both services, on
// a NATS server of the test's own; it returns the shard's address.
func startShoal(t testing.TB) string {
	t.Helper()
	srv := bustest.RunServer(t)
	s, err := shard.New(shard.Config{
		ID:             "b1",
		Addr:           "127.0.0.1:0",
		NATS:           bustest.Connect(t, srv.ClientURL()),
		Services:       []string{"echo", "fanout"},
		MaxConnsPerIP:  -1,
		MaxMessageRate: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for name, h := range map[string]service.Handler{"echo": echo.New(), "fanout": fanout.New()} {
		svc, err := service.New(bustest.Connect(t, srv.ClientURL()), service.Config{Name: name}, h)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s service: %v", name, err)
			}
		})
		select {
		case <-svc.Ready():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s service not ready", name)
		}
	}
	return s.Addr().String()
}

// runBench runs shoal bench with args and returns the report and output.
func runBench(t *testing.T, args ...string) (*Report, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	args = append(args, "--json", jsonPath)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Main(ctx, Config{Args: args, Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("bench %v: %v\n%s\n%s", args, err, out.String(), errOut.String())
	}
	fromFile := readReportFile(t, jsonPath)
	if fromFile.Conns.Established != rep.Conns.Established || fromFile.Messages.Received != rep.Messages.Received {
		t.Errorf("--json file differs from the report returned")
	}
	return rep, out.String()
}

// readReportFile reads a report written by --json.
func readReportFile(t testing.TB, path string) *Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := ReadReport(f)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestConnectAgainstShoal(t *testing.T) {
	addr := startShoal(t)
	rep, out := runBench(t, "connect", "--url", "ws://"+addr+"/ws/echo", "--conns", "50", "--rate", "500", "--hold", "300ms",
		"--server-pid", fmt.Sprint(os.Getpid()))
	if rep.Conns.Target != 50 || rep.Conns.Established != 50 || rep.Conns.Failed != 0 || rep.Conns.Dropped != 0 {
		t.Fatalf("conns %+v\n%s", rep.Conns, out)
	}
	if l := rep.Latency["handshake"]; l == nil || l.Count != 50 {
		t.Fatalf("handshake latencies %+v", l)
	}
	if rep.Server == nil || rep.Server.BeforeKiB == 0 || rep.Server.AfterKiB == 0 {
		t.Errorf("server memory %+v", rep.Server)
	}
	if !strings.Contains(out, "50 of 50 established") {
		t.Errorf("table:\n%s", out)
	}
}

func TestConnectFailuresByCause(t *testing.T) {
	addr := startShoal(t)
	rep, _ := runBench(t, "connect", "--url", "ws://"+addr+"/ws/nosuchservice", "--conns", "5", "--rate", "500", "--hold", "10ms")
	if rep.Conns.Established != 0 || rep.Conns.Failed != 5 || len(rep.Conns.Failures) != 1 {
		t.Fatalf("conns %+v", rep.Conns)
	}
	for cause := range rep.Conns.Failures {
		if !strings.HasPrefix(cause, "handshake status 4") {
			t.Errorf("cause %q, want a 4xx handshake status", cause)
		}
	}
}

func TestEchoAgainstShoal(t *testing.T) {
	addr := startShoal(t)
	rep, out := runBench(t, "echo", "--url", "ws://"+addr+"/ws/echo", "--conns", "50", "--rate", "500",
		"--msg-rate", "400", "--duration", "500ms", "--size", "100", "--server-pid", fmt.Sprint(os.Getpid()))
	if rep.Conns.Established != 50 {
		t.Fatalf("conns %+v", rep.Conns)
	}
	m := rep.Messages
	if m.Sent != 200 || m.Received != 200 || m.Lost != 0 || m.Duplicated != 0 {
		t.Fatalf("messages %+v\n%s", m, out)
	}
	if l := rep.Latency["rtt"]; l == nil || l.Count != 200 {
		t.Fatalf("rtt latencies %+v", l)
	}
	// The "server" is this process, bench included: it spent CPU time
	// while the messages went out, and every message shares it.
	s := rep.Server
	if s == nil || s.CPUSeconds <= 0 || s.CPUWallSec < 0.5 || len(s.ProcCPUSeconds) != 1 ||
		s.CPUPerMessageUs != s.CPUSeconds*1e6/200 || !strings.Contains(out, "µs per message received") {
		t.Errorf("server CPU %+v\n%s", s, out)
	}
}

func TestFanoutAgainstShoal(t *testing.T) {
	addr := startShoal(t)
	rep, out := runBench(t, "fanout", "--url", "ws://"+addr+"/ws/fanout", "--conns", "30", "--rooms", "3", "--rate", "500",
		"--pub-rate", "60", "--duration", "500ms", "--size", "64")
	if rep.Conns.Established != 30 {
		t.Fatalf("conns %+v\n%s", rep.Conns, out)
	}
	f := rep.Fanout
	if f == nil || f.Members[0]+f.Members[1]+f.Members[2] != 30 {
		t.Fatalf("fanout %+v", f)
	}
	m := rep.Messages
	// 30 messages, 10 per room, each to the room's 10 members.
	if m.Sent != 30 || m.Expected != 300 || m.Received != 300 || m.Lost != 0 || m.Duplicated != 0 || m.MembersWithLoss != 0 {
		t.Fatalf("messages %+v\n%s", m, out)
	}
	if l := rep.Latency["delivery"]; l == nil || l.Count != 300 {
		t.Fatalf("delivery latencies %+v", l)
	}
}

// TestReceiveWindow: a server that delivers after the send window is
// credited with the rate it delivered at, not the rate it was sent at.
func TestReceiveWindow(t *testing.T) {
	var s Stats
	start := int64(1e9)
	if w := s.Window(start, 2*time.Second); w != 2 {
		t.Fatalf("nothing received: window %v, want 2", w)
	}
	s.Got(start + int64(time.Second))
	if w := s.Window(start, 2*time.Second); w != 2 {
		t.Fatalf("received within the window: %v, want 2", w)
	}
	s.Got(start + int64(5*time.Second))
	if w := s.Window(start, 2*time.Second); w != 5 {
		t.Fatalf("received 3s late: window %v, want 5", w)
	}
	rep := &Report{Messages: MessageStats{Sent: 100, Received: 1000, Seconds: 2, RecvSeconds: 5}}
	finish(rep)
	if rep.Messages.SentPerSec != 50 || rep.Messages.RecvPerSec != 200 {
		t.Fatalf("rates %v sent/s, %v received/s; want 50 and 200", rep.Messages.SentPerSec, rep.Messages.RecvPerSec)
	}
}
