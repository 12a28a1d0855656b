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

func runService(args []string, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageError("service: name the service to run: %s", bundledNames())
	}
	name := args[0]
	mk, ok := bundled[name]
	if !ok {
		return usageError("service: no bundled service %q (have: %s)", name, bundledNames())
	}
	fs := flag.NewFlagSet("service "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		natsURL string
		cfg     = service.Config{Name: name}
		logs    logFlags
	)
	fs.StringVar(&natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL")
	fs.StringVar(&cfg.Prefix, "prefix", "shoal", "NATS subject prefix")
	fs.StringVar(&cfg.Queue, "queue", "", "queue group (default: the service name)")
	fs.IntVar(&cfg.Workers, "handlers", 0, "events handled in parallel (default: 8 per CPU, at least 16)")
	logs.register(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	log = log.With("service", name)
	cfg.Logger = log
	nc, err := bus.Connect(bus.Config{URL: natsURL, Name: "shoal-service-" + name, Logger: log})
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
