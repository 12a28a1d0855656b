package main

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/wire"
)

// TestServeLimits runs `shoal serve` with tight limits given as flags:
// serve passes them to its worker, the worker enforces them, and the
// supervisor's /metrics counts each by reason.
func TestServeLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := startServe(t, "--workers", "1", "--services", "echo", "--max-conns", "2",
		"--max-msg-rate", "1", "--max-msg-burst", "2", "--max-msg-drops", "3", "--slow-policy", "close,echo=drop-oldest")
	events := f.watch("echo")

	flooder := dial(t, f.ws+"/ws/echo")
	dial(t, f.ws+"/ws/echo")
	if status, body := handshake(t, f.ws+"/ws/echo"); status != 503 || !strings.Contains(body, "try again later") {
		t.Fatalf("third connection to a worker of --max-conns 2: %d %q, want 503", status, body)
	}

	// Past its rate the flooder's messages are dropped, and past its
	// drops it is closed with 1008.
	flooder.c.SetDeadline(time.Now().Add(10 * time.Second))
	for range 20 {
		if err := wsutil.WriteClientMessage(flooder.c, ws.OpText, []byte("spam")); err != nil {
			t.Fatal(err)
		}
	}
	for {
		fr, err := ws.ReadFrame(flooder.rw)
		if err != nil {
			t.Fatalf("flooder: %v before a close frame", err)
		}
		if fr.Header.OpCode == ws.OpClose {
			if code, reason := wire.ParseClose(fr.Payload); code != ws.StatusPolicyViolation || string(reason) != "message rate limit exceeded" {
				t.Fatalf("flooder closed with %d %q", code, reason)
			}
			break
		}
	}
	dropped := 0
	deadline := time.After(10 * time.Second)
	for dropped == 0 {
		select {
		case m := <-events:
			if m.Header.Get(bus.HeaderEvent) == bus.EventDropped && m.Header.Get(bus.HeaderDropReason) == bus.DropRateLimit {
				dropped++
			}
		case <-deadline:
			t.Fatal("no dropped event for the flooder")
		}
	}

	// The flooder's place is free again.
	waitMetric(t, f, `shoal_connections{`, 1)
	dial(t, f.ws+"/ws/echo")
	waitMetric(t, f, `shoal_handshakes_rejected_total{reason="max_conns"`, 1)
	waitMetric(t, f, `shoal_messages_dropped_total{reason="rate_limit"`, 4)
	waitMetric(t, f, `shoal_server_closes_total{reason="flood"`, 1)
}

// waitMetric waits until the series starting with prefix add up to want.
func waitMetric(t *testing.T, f *fleet, prefix string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := f.metricSum(prefix)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s... adds up to %d, want %d", prefix, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Serve forwards the limits to its workers as flags the worker parses back
// to the same values.
func TestLimitFlagsForwarded(t *testing.T) {
	serve := flag.NewFlagSet("serve", flag.ContinueOnError)
	var sg gatewayFlags
	sg.register(serve)
	args := []string{"--max-conns=7", "--max-handshake-rate=9", "--max-msg-burst=3", "--max-msg-drops=-1", "--slow-policy=drop-oldest,echo=close"}
	if err := parse(serve, args); err != nil {
		t.Fatal(err)
	}
	worker := flag.NewFlagSet("worker", flag.ContinueOnError)
	var wg gatewayFlags
	wg.register(worker)
	if err := parse(worker, forwarded(serve, gatewayFlagNames)); err != nil {
		t.Fatal(err)
	}
	if wg.maxConns != 7 || wg.maxHandshakes != 9 || wg.maxMsgBurst != 3 || wg.maxMsgDrops != -1 || wg.slowPolicy.String() != "drop-oldest,echo=close" {
		t.Fatalf("worker got %+v from %v", wg, forwarded(serve, gatewayFlagNames))
	}
}
