package bench

import (
	"flag"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-gw/shoal/bench/client"
)

// MaxConnsPerProc is the most connections one bench process takes by
// default: well under the 20000 open files a process may have here, with
// room for the poller, pipes and the odd log file.
const MaxConnsPerProc = 15000

// Options are the flags every scenario shares.
type Options struct {
	URL              string
	Conns            int
	Rate             float64 // connections per second during the ramp
	Source           string
	ServerPIDs       string
	Admin            string
	Procs            int
	JSON             string
	Plot             string
	HandshakeTimeout time.Duration
	Workers          int
	// Proto is the target's wire protocol, one of Protocols.
	Proto string
	// HMACSecret signs Centrifugo connection tokens.
	HMACSecret string

	// ChildIndex and ChildCount are set by a parent on its children.
	ChildIndex, ChildCount int
}

func (o *Options) register(fs *flag.FlagSet, defaultRate float64, path string) {
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080"+path, "target `URL`; a comma-separated list spreads the connections over several (the gateways of a fleet)")
	fs.IntVar(&o.Conns, "conns", 1000, "connections (all processes together)")
	fs.Float64Var(&o.Rate, "rate", defaultRate, "connections opened per second during the ramp (all processes together)")
	fs.StringVar(&o.Source, "source", "", "source addresses, a range such as 127.0.0.2-127.0.0.250 or a comma list (default for a loopback target: "+client.DefaultSources+")")
	fs.StringVar(&o.ServerPIDs, "server-pid", "", "server process ids, comma separated, whose resident memory is measured")
	fs.StringVar(&o.Admin, "admin", "", "shoal admin endpoint (host:port); its /procs list gives the server processes to measure")
	fs.IntVar(&o.Procs, "procs", 0, fmt.Sprintf("bench processes (default: enough for at most %d connections each)", MaxConnsPerProc))
	fs.StringVar(&o.JSON, "json", "", "write the full report as JSON to `FILE`")
	fs.StringVar(&o.Plot, "plot", "", "draw the latency percentile curve and the throughput over time as SVG in `FILE`")
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 10*time.Second, "limit on connect plus WebSocket handshake")
	fs.IntVar(&o.Workers, "workers", 0, "goroutines that read and write connections (default 4 per CPU)")
	fs.StringVar(&o.Proto, "proto", ProtoBench, "the target's protocol: "+ProtoBench+" (shoal and the bench peers) or "+ProtoCentrifugo+" (Centrifugo's client protocol; --url ws://HOST:PORT"+CentrifugoPath+")")
	fs.StringVar(&o.HMACSecret, "hmac-secret", "", "with --proto "+ProtoCentrifugo+": the server's client.token.hmac_secret_key, to sign each connection's token (empty: no token, for client.insecure)")
	fs.IntVar(&o.ChildIndex, "child-index", 0, "set by the parent process on its children")
	fs.IntVar(&o.ChildCount, "child-count", 0, "set by the parent process on its children")
}

// check validates the shared flags.
func (o *Options) check() error {
	urls := client.SplitURLs(o.URL)
	if len(urls) == 0 {
		return fmt.Errorf("%w: --url is empty", ErrUsage)
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "ws" || u.Host == "" {
			return fmt.Errorf("%w: --url %q: want ws://host:port/path", ErrUsage, raw)
		}
	}
	if o.Conns <= 0 {
		return fmt.Errorf("%w: --conns must be positive", ErrUsage)
	}
	if o.Rate <= 0 {
		return fmt.Errorf("%w: --rate must be positive", ErrUsage)
	}
	if o.ChildCount > 0 && (o.ChildIndex < 0 || o.ChildIndex >= o.ChildCount) {
		return fmt.Errorf("%w: --child-index %d of %d", ErrUsage, o.ChildIndex, o.ChildCount)
	}
	if _, err := o.sources(); err != nil {
		return fmt.Errorf("%w: --source: %w", ErrUsage, err)
	}
	if _, err := parsePIDs(o.ServerPIDs); err != nil {
		return err
	}
	if !slices.Contains(Protocols(), o.Proto) {
		return fmt.Errorf("%w: --proto %q (have %s)", ErrUsage, o.Proto, strings.Join(Protocols(), ", "))
	}
	return nil
}

// procs is the number of processes to run.
func (o *Options) procs() int {
	if o.Procs > 0 {
		return o.Procs
	}
	return max(1, (o.Conns+MaxConnsPerProc-1)/MaxConnsPerProc)
}

// sources is the source address list: --source, or the default range when
// every target is on loopback.
func (o *Options) sources() ([]client.Addr, error) {
	if o.Source != "" {
		return client.ParseSources(o.Source)
	}
	for _, raw := range client.SplitURLs(o.URL) {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, nil
		}
		ap, err := client.ResolveTarget(u)
		if err != nil || !ap.Addr().IsLoopback() || !ap.Addr().Is4() {
			return nil, nil
		}
	}
	return client.ParseSources(client.DefaultSources)
}

func parsePIDs(s string) ([]int, error) {
	pids, err := parseInts(s)
	if err != nil {
		return nil, fmt.Errorf("%w: --server-pid: %w", ErrUsage, err)
	}
	return pids, nil
}

// parseInts parses a comma list of distinct positive integers; an empty
// list is nil.
func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%d twice", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// Share returns the offset and size of part i of n of total items: the
// first total%n parts get one more.
func Share(total, i, n int) (off, size int) {
	if n <= 1 {
		return 0, total
	}
	q, r := total/n, total%n
	size = q
	if i < r {
		size++
	}
	off = i*q + min(i, r)
	return off, size
}

// defaultWorkers is the pool size when --workers is not given.
func defaultWorkers() int { return max(8, 4*runtime.GOMAXPROCS(0)) }
