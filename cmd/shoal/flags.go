package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/shard"
)

// byteSize is a flag value in bytes that also takes KiB, MiB, GiB (and
// their powers-of-ten cousins kB, MB, GB).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(num, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("want a size such as 1048576, 64KiB or 1MiB")
	}
	*b = byteSize(n * mult)
	return nil
}

// workersFlag is a worker count or "auto" (0): one per CPU available,
// which the supervisor works out.
type workersFlag int

func (w *workersFlag) String() string {
	if *w <= 0 {
		return "auto"
	}
	return strconv.Itoa(int(*w))
}

func (w *workersFlag) Set(s string) error {
	if strings.TrimSpace(s) == "auto" {
		*w = 0
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 {
		return fmt.Errorf(`want "auto" or a number of workers from 1`)
	}
	*w = workersFlag(n)
	return nil
}

// listFlag is a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// slowPolicyFlag is --slow-policy: what happens to a client whose queue
// is full, for every service ("close", "drop-oldest") and NAME=POLICY for
// some ("close,ticker=drop-oldest").
type slowPolicyFlag struct {
	all shard.SlowPolicy
	per map[string]shard.SlowPolicy
}

func (f *slowPolicyFlag) String() string {
	parts := []string{f.all.String()}
	names := make([]string, 0, len(f.per))
	for n := range f.per {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		parts = append(parts, n+"="+f.per[n].String())
	}
	return strings.Join(parts, ",")
}

func (f *slowPolicyFlag) Set(s string) error {
	*f = slowPolicyFlag{}
	seenAll := false
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, named := strings.Cut(part, "=")
		if !named {
			value = name
		}
		p, err := shard.ParseSlowPolicy(value)
		if err != nil {
			return fmt.Errorf("%q: want close or drop-oldest", value)
		}
		_, dup := f.per[name]
		switch {
		case !named && seenAll:
			return fmt.Errorf("%q: the policy of every service is given twice", part)
		case !named:
			f.all, seenAll = p, true
		case bus.ValidServiceName(name) != nil:
			return fmt.Errorf("%q: %q is not a service name", part, name)
		case dup:
			return fmt.Errorf("%q: service %s is given twice", part, name)
		default:
			if f.per == nil {
				f.per = make(map[string]shard.SlowPolicy)
			}
			f.per[name] = p
		}
	}
	return nil
}

// check refuses a policy for a service that clients cannot reach: a
// misspelt name would leave the service it meant on the default.
func (f *slowPolicyFlag) check(services []string) error {
	for name := range f.per {
		if !slices.Contains(services, name) {
			return usageError("--slow-policy: %s is not a service clients reach (have: %s)", name, strings.Join(services, ", "))
		}
	}
	return nil
}

// gatewayFlags are the per-connection limits; serve passes the ones given
// on its command line on to every worker.
type gatewayFlags struct {
	maxMessage     byteSize
	maxQueue       byteSize
	maxMsgRate     int
	maxMsgBurst    int
	maxMsgDrops    int
	maxConnsPerIP  int
	maxConns       int
	maxHandshakes  int
	slowPolicy     slowPolicyFlag
	handshake      time.Duration
	pingInterval   time.Duration
	idleTimeout    time.Duration
	drainWindow    time.Duration
	allowedOrigins originsFlag
	tlsCert        string
	tlsKey         string
	compress       listFlag
}

// gatewayFlagNames lists the flags serve forwards to workers.
var gatewayFlagNames = []string{"max-message", "max-queue", "max-msg-rate", "max-msg-burst", "max-msg-drops",
	"max-conns-per-ip", "max-conns", "max-handshake-rate", "slow-policy",
	"handshake-timeout", "ping-interval", "idle-timeout", "drain-window", "allowed-origins", "tls-cert", "tls-key", "compress"}

func (g *gatewayFlags) register(fs *flag.FlagSet) {
	g.maxMessage = shard.DefaultMaxMessage
	g.maxQueue = shard.DefaultMaxQueue
	fs.Var(&g.maxMessage, "max-message", "largest client message after reassembly; larger ones close with 1009")
	fs.Var(&g.maxQueue, "max-queue", "bytes queued for one slow client before --slow-policy applies (by default: closed with 1008)")
	fs.Var(&g.slowPolicy, "slow-policy", "what a full queue does: close (1008, the default) or drop-oldest (and tell the service), for every service, then NAME=POLICY for some, e.g. close,ticker=drop-oldest")
	fs.IntVar(&g.maxMsgRate, "max-msg-rate", shard.DefaultMaxMessageRate, "messages per second one client may send (-1: no limit); past it a message is dropped and its service told")
	fs.IntVar(&g.maxMsgBurst, "max-msg-burst", 0, "messages one client may send at once within --max-msg-rate (0: as many as the rate)")
	fs.IntVar(&g.maxMsgDrops, "max-msg-drops", 0, "dropped messages within 10s after which a flooding client is closed with 1008 (0: --max-msg-burst; -1: never)")
	fs.IntVar(&g.maxConnsPerIP, "max-conns-per-ip", 4096, "connections one client address may hold per worker (-1: no limit); past it HTTP 429")
	fs.IntVar(&g.maxConns, "max-conns", 0, "WebSocket connections per worker (0: nine tenths of its open-files limit; -1: no limit); past it HTTP 503")
	fs.IntVar(&g.maxHandshakes, "max-handshake-rate", acceptor.DefaultMaxHandshakeRate, "new WebSocket connections per second per worker (-1: no limit); past it HTTP 503 with Retry-After")
	fs.DurationVar(&g.handshake, "handshake-timeout", 5*time.Second, "time from accept to a complete WebSocket handshake")
	fs.DurationVar(&g.pingInterval, "ping-interval", shard.DefaultPingInterval, "silence after which the server pings a client")
	fs.DurationVar(&g.idleTimeout, "idle-timeout", shard.DefaultIdleTimeout, "silence after which a client is closed")
	fs.DurationVar(&g.drainWindow, "drain-window", shard.DefaultDrainWindow, "time over which a draining worker spreads its close frames, each asking its client to reconnect after a random delay of up to the window (negative: all at once)")
	fs.Var(&g.allowedOrigins, "allowed-origins", "browser origins allowed besides the gateway's own host, comma separated (* for any);\n"+
		"SERVICE=ORIGIN entries give a service a list of its own instead; the flag may be repeated")
	fs.StringVar(&g.tlsCert, "tls-cert", "", "PEM certificate chain: serve wss:// and https:// on --addr (needs --tls-key; a worker reloads it on SIGHUP, which serve sends on SIGUSR1 and SIGHUP)")
	fs.StringVar(&g.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.Var(&g.compress, "compress", "services whose clients may negotiate permessage-deflate, comma separated, or all")
}

// keyPair loads the TLS certificate and key, or returns nil without TLS.
func (g *gatewayFlags) keyPair() (*acceptor.KeyPair, error) {
	if g.tlsCert == "" && g.tlsKey == "" {
		return nil, nil
	}
	if g.tlsCert == "" || g.tlsKey == "" {
		return nil, usageError("--tls-cert and --tls-key go together")
	}
	return acceptor.LoadKeyPair(g.tlsCert, g.tlsKey)
}

func (g *gatewayFlags) apply(cfg *shard.Config) {
	cfg.MaxMessage = int64(g.maxMessage)
	cfg.MaxQueue = int(g.maxQueue)
	cfg.MaxMessageRate = g.maxMsgRate
	cfg.MaxMessageBurst = g.maxMsgBurst
	cfg.MaxMessageDrops = g.maxMsgDrops
	cfg.MaxConnsPerIP = g.maxConnsPerIP
	cfg.MaxConns = g.maxConns
	cfg.MaxHandshakeRate = g.maxHandshakes
	cfg.SlowPolicy = g.slowPolicy.all
	cfg.SlowPolicies = g.slowPolicy.per
	cfg.HandshakeTimeout = g.handshake
	cfg.PingInterval = g.pingInterval
	cfg.IdleTimeout = g.idleTimeout
	cfg.DrainWindow = g.drainWindow
	cfg.AllowedOrigins, cfg.ServiceOrigins = g.allowedOrigins.split()
	cfg.Compress = nil
	for _, name := range g.compress {
		if name == "all" {
			name = "*"
		}
		cfg.Compress = append(cfg.Compress, name)
	}
}

// checkServices refuses service names in --slow-policy, --compress and
// --allowed-origins that are not among routes: a misspelt name would leave
// the service it meant on the default.
func (g *gatewayFlags) checkServices(routes []string) error {
	if err := g.slowPolicy.check(routes); err != nil {
		return err
	}
	check := func(flag, name string) error {
		if !slices.Contains(routes, name) {
			return usageError("--%s: %q is not a service clients can reach (have: %s)", flag, name, strings.Join(routes, ","))
		}
		return nil
	}
	for _, name := range g.compress {
		if name != "all" && name != "*" {
			if err := check("compress", name); err != nil {
				return err
			}
		}
	}
	_, per := g.allowedOrigins.split()
	for name := range per {
		if err := check("allowed-origins", name); err != nil {
			return err
		}
	}
	return nil
}

// originsFlag is --allowed-origins: a comma-separated list that grows with
// each use of the flag. An entry is an origin for every service
// ("https://app.example.com", or * for any), or SERVICE=ORIGIN for one
// service ("chat=https://chat.example.com"; repeat the name for more).
// An origin never holds '=', so the two cannot be mistaken.
type originsFlag []string

func (o *originsFlag) String() string { return strings.Join(*o, ",") }

func (o *originsFlag) Set(s string) error {
	var more listFlag
	_ = more.Set(s)
	for _, e := range more {
		if name, origin, ok := strings.Cut(e, "="); ok && (name == "" || origin == "") {
			return fmt.Errorf("%q: want ORIGIN or SERVICE=ORIGIN", e)
		}
	}
	*o = append(*o, more...)
	return nil
}

// split separates the entries for every service from those per service.
func (o originsFlag) split() (all []string, per map[string][]string) {
	for _, e := range o {
		if name, origin, ok := strings.Cut(e, "="); ok {
			if per == nil {
				per = make(map[string][]string)
			}
			per[name] = append(per[name], origin)
		} else {
			all = append(all, e)
		}
	}
	return all, per
}

// forwarded returns "--name=value" for each of names set on fs's command line.
func forwarded(fs *flag.FlagSet, names []string) []string {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	var args []string
	fs.Visit(func(f *flag.Flag) {
		if want[f.Name] {
			args = append(args, "--"+f.Name+"="+f.Value.String())
		}
	})
	return args
}

// logFlags choose the log level and format.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError("--log-format %q: want text or json", l.format)
}

// parse parses args and refuses stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return usageError("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}
