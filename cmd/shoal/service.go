package main

import (
	"context"
	"flag"
	"io"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service"
	"github.com/shoal-gw/shoal/service/echo"
	"github.com/shoal-gw/shoal/service/fanout"
)

// bundled are the services this binary can run, by name.
var bundled = map[string]func() service.Handler{
	"echo":   echo.New,
	"fanout": fanout.New,
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
	fs.StringVar(&st.config, "config", "", "TOML file whose [service."+name+"] table holds these settings (default $"+configEnv+")")
	fs.StringVar(&st.debug, "debug-socket", "", "unix socket to serve /debug/pprof on, for the admin endpoint of serve")
	st.logs.register(fs)
	return fs, st
}

func runService(args []string, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError("service: name the service to run: %s", bundledNames())
	}
	name := args[0]
	mk, ok := bundled[name]
	if !ok {
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
	nc, err := bus.Connect(bus.Config{URL: st.natsURL, Name: "shoal-service-" + name, Logger: log})
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := service.New(nc, cfg, mk())
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
