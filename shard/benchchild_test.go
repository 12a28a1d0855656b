package shard

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/wire"
)

// benchChildEnv carries "addr[,tls=CAFILE],count" to the client process
// of the many-connection benchmarks; with tls= it dials TLS and trusts the
// CA in CAFILE. A shard and its 10 000 clients in one
// process would need more descriptors than one process may open.
const benchChildEnv = "SHOAL_BENCH_CHILD"

// Protocol between the benchmark and its client process. The child
// writes lines on descriptor 3 and reads commands on stdin; stdin's end
// tells it to exit.
const (
	childReady = "ready" // ready <conns>: every connection is upgraded
	childTotal = "total" // total <frames>: data frames received so far
	childStats = "stats" // stats <min> <max>: per-connection data frames
	childFail  = "fail"  // fail <error>
)

// dialWorkers bounds the handshakes in flight, so that the listen backlog
// never overflows.
const dialWorkers = 32

// TestBenchChild is the client side of BenchmarkFanout10k and
// BenchmarkIdleConns10k, run in a process of its own; it is skipped
// unless a benchmark started it.
func TestBenchChild(t *testing.T) {
	spec := os.Getenv(benchChildEnv)
	if spec == "" {
		t.Skip("client process of the connection benchmarks; started by them")
	}
	parts := strings.Split(spec, ",")
	count, err := strconv.Atoi(parts[len(parts)-1])
	if len(parts) < 2 || err != nil || count <= 0 {
		t.Fatalf("%s=%q: want addr[,tls=CAFILE],count", benchChildEnv, spec)
	}
	addr := parts[0]
	var tlsCfg *tls.Config
	if len(parts) == 3 {
		caFile, ok := strings.CutPrefix(parts[1], "tls=")
		pem, err := os.ReadFile(caFile)
		if !ok || err != nil {
			t.Fatalf("%s=%q: %v", benchChildEnv, spec, err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		host, _, _ := net.SplitHostPort(addr)
		tlsCfg = &tls.Config{RootCAs: pool, ServerName: host}
	}
	rep := &childReporter{w: os.NewFile(3, "report")}
	defer rep.w.Close()

	conns := make([]net.Conn, count)
	frames := make([]atomic.Int64, count)
	var total atomic.Int64
	var readers sync.WaitGroup
	defer readers.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()

	next := make(chan int)
	errs := make(chan error, dialWorkers)
	var dialers sync.WaitGroup
	for range dialWorkers {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for i := range next {
				c, br, err := childDial(addr, tlsCfg)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				readers.Add(1)
				go func() {
					defer readers.Done()
					childRead(c, br, &frames[i], &total)
				}()
			}
		}()
	}
	var dialErr error
feed:
	for i := range count {
		select {
		case next <- i:
		case dialErr = <-errs:
			break feed
		}
	}
	close(next)
	dialers.Wait()
	if dialErr == nil && len(errs) > 0 {
		dialErr = <-errs
	}
	if dialErr != nil {
		rep.line(childFail, dialErr.Error())
		t.Fatal(dialErr)
	}
	rep.line(childReady, strconv.Itoa(count))

	stop := make(chan struct{})
	var reporter sync.WaitGroup
	reporter.Add(1)
	go func() {
		defer reporter.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var last int64
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if n := total.Load(); n != last {
				last = n
				rep.line(childTotal, strconv.FormatInt(n, 10))
			}
		}
	}()
	defer func() {
		close(stop)
		reporter.Wait()
	}()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == childStats {
			lo, hi := frames[0].Load(), frames[0].Load()
			for i := range frames {
				v := frames[i].Load()
				lo, hi = min(lo, v), max(hi, v)
			}
			rep.line(childStats, strconv.FormatInt(lo, 10), strconv.FormatInt(hi, 10))
		}
	}
}

// childReporter serialises the child's report lines.
type childReporter struct {
	mu sync.Mutex
	w  *os.File
}

func (r *childReporter) line(words ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = io.WriteString(r.w, strings.Join(words, " ")+"\n")
}

// childDial opens one WebSocket connection with the request dialWS sends,
// over TLS when cfg is set; it returns errors instead of failing a test,
// as it runs on many goroutines.
func childDial(addr string, cfg *tls.Config) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, nil, err
	}
	if cfg != nil {
		tc := tls.Client(c, cfg)
		tc.SetDeadline(time.Now().Add(30 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, nil, err
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	req := "GET /ws/echo HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, nil, err
	}
	// A small buffer: the child holds thousands of them.
	br := bufio.NewReaderSize(c, 512)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, nil, fmt.Errorf("handshake: %s", resp.Status)
	}
	c.SetReadDeadline(time.Time{})
	return c, br, nil
}

// childRead counts and discards the data frames of one connection and
// answers pings, until the connection ends.
func childRead(c net.Conn, br *bufio.Reader, frames, total *atomic.Int64) {
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			if _, err := c.Write(wire.AppendMaskedFrame(nil, ws.OpPong, true, testMask, p)); err != nil {
				return
			}
			continue
		case ws.OpClose:
			return
		}
		if _, err := br.Discard(int(h.Length)); err != nil {
			return
		}
		if h.Fin && h.OpCode != ws.OpPong {
			frames.Add(1)
			total.Add(1)
		}
	}
}
