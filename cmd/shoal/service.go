package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service"
	"github.com/shoal-gw/shoal/service/echo"
	"github.com/shoal-gw/shoal/service/fanout"
)

// serviceEnv is what `shoal service NAME` gives a bundled service's
// constructor: the bus connection and the settings every bundled service
// is started with, whether it uses them or not.
type serviceEnv struct {
	// NATS is the service's bus connection, for storage beside the events.
	NATS *nats.Conn
	// TokenKeyFile is the path of the key that signs and checks tokens
	// (--token-key-file); "" when none was given.
	TokenKeyFile string
	Logger       *slog.Logger
}

// makeService builds a bundled service's Handler once its flags are parsed.
type makeService func(env serviceEnv) (service.Handler, error)

// bundled are the services this binary can run, by name. Each registers
// its own flags, if it has any, on the flag set of `shoal service NAME`
// and returns the constructor that reads them.
var bundled = map[string]func(fs *flag.FlagSet) makeService{
	// echo and fanout trust nobody and need no key.
	"echo":   noFlags(func(serviceEnv) (service.Handler, error) { return echo.New(), nil }),
	"fanout": noFlags(func(serviceEnv) (service.Handler, error) { return fanout.New(), nil }),
	"chat":   chatFlags,
}

// noFlags is the flag registration of a service without flags of its own.
func noFlags(mk makeService) func(*flag.FlagSet) makeService {
	return func(*flag.FlagSet) makeService { return mk }
}

func bundledNames() string {
	names := make([]string, 0, len(bundled))
	for n := range bundled {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// serviceSettings are the flags of `shoal service NAME`.
type serviceSettings struct {
	natsURL string
	cfg     service.Config
	logs    logFlags
	config  string
	debug   string
	env     serviceEnv
	mk      makeService
}

// serviceFlags builds the flag set of `shoal service NAME`; serve uses it
// too, to check and print a config file's [service.NAME] table.
func serviceFlags(name string, stderr io.Writer) (*flag.FlagSet, *serviceSettings) {
	fs := flag.NewFlagSet("service "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	st := &serviceSettings{cfg: service.Config{Name: name}}
	fs.StringVar(&st.natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL")
	fs.StringVar(&st.cfg.Prefix, "prefix", "shoal", "NATS subject prefix")
	fs.StringVar(&st.cfg.Queue, "queue", "", "queue group (default: the service name)")
	fs.IntVar(&st.cfg.Workers, "handlers", 0, "events handled in parallel (default: 8 per CPU, at least 16)")
	fs.StringVar(&st.env.TokenKeyFile, "token-key-file", "", "key file that signs and checks tokens, for services that issue them (serve passes its own)")
	fs.StringVar(&st.config, "config", "", "TOML file whose [service."+name+"] table holds these settings (default $"+configEnv+")")
	fs.StringVar(&st.debug, "debug-socket", "", "unix socket to serve /debug/pprof on, for the admin endpoint of serve")
	st.logs.register(fs)
	if own := bundled[name]; own != nil {
		st.mk = own(fs)
	}
	return fs, st
}

func runService(args []string, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError("service: name the service to run: %s", bundledNames())
	}
	name := args[0]
	if _, ok := bundled[name]; !ok {
		return usageError("service: no bundled service %q (have: %s)", name, bundledNames())
	}
	fs, st := serviceFlags(name, stderr)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if _, _, err := settle(fs, st.config, serviceEnvPrefix(name), serviceTable(name)); err != nil {
		return err
	}
	log, err := st.logs.logger(stderr)
	if err != nil {
		return err
	}
	log = log.With("service", name)
	stopDebug, err := serveDebug(st.debug, log)
	if err != nil {
		return err
	}
	defer stopDebug()
	cfg := st.cfg
	cfg.Logger = log
	nc, err := bus.Connect(bus.Config{URL: st.natsURL, Name: bus.ServiceClientName(name, os.Getpid()), Logger: log})
	if err != nil {
		return err
	}
	defer nc.Close()
	env := st.env
	env.NATS, env.Logger = nc, log
	h, err := st.mk(env)
	if err != nil {
		return err
	}
	svc, err := service.New(nc, cfg, h)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("service running")
	if err := svc.Run(ctx); err != nil {
		return err
	}
	log.Info("service stopped")
	return nil
}
