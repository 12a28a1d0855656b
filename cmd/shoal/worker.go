package main

import (
	"context"
	"flag"
	"io"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/auth"
	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/service/chat/web"
	"github.com/shoal-gw/shoal/shard"
)

func runWorker(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      shard.Config
		natsURL  string
		services listFlag
		gw       gatewayFlags
		logs     logFlags
		keyFile  string
		debug    string
		listenFd int
	)
	fs.StringVar(&cfg.ID, "shard", "", "shard id on the bus (required)")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address to listen on, shared through SO_REUSEPORT")
	fs.StringVar(&natsURL, "nats", "nats://127.0.0.1:4222", "NATS URL")
	fs.StringVar(&cfg.Prefix, "prefix", "shoal", "NATS subject prefix")
	fs.Var(&services, "services", "service names clients may reach, comma separated")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", shard.DefaultDrainTimeout, "how long to wait for clients to close on SIGTERM")
	fs.StringVar(&keyFile, "token-key-file", "", "key file that checks the clients' tokens (default: no tokens; every client is anonymous)")
	fs.StringVar(&debug, "debug-socket", "", "unix socket to serve /debug/pprof on, for the admin endpoint of serve")
	fs.IntVar(&listenFd, "listen-fd", -1, "inherited listening socket to accept on instead of opening --addr (serve hands one to each worker)")
	gw.register(fs)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.ID == "" {
		return usageError("worker: --shard is required")
	}
	if err := gw.checkServices(services); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	stopDebug, err := serveDebug(debug, log)
	if err != nil {
		return err
	}
	defer stopDebug()
	gw.apply(&cfg)
	keys, err := gw.keyPair()
	if err != nil {
		return err
	}
	if keys != nil {
		cfg.TLS = acceptor.ServerTLSConfig(keys)
	}
	cfg.Services = services
	if listenFd >= 0 {
		// serve's socket for this worker's slot, shared with the worker
		// it replaces, if any.
		if cfg.Listener, err = acceptor.FileListener(listenFd); err != nil {
			return err
		}
	}
	if slices.Contains(services, "chat") {
		// The chat's page, on the gateway's own port.
		cfg.HTTP = web.Handler()
	}
	if keyFile != "" {
		// Read once: tokens are checked with the key in memory.
		key, err := auth.LoadKey(keyFile)
		if err != nil {
			return err
		}
		cfg.Authenticate = tokenAuthenticator(key)
	}
	cfg.Logger = log
	nc, err := bus.Connect(bus.Config{URL: natsURL, Name: "shoal-worker-" + cfg.ID, Logger: log, ConnectTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg.NATS = nc
	sh, err := shard.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go workerSignals(ctx, stop, sh, keys, log)
	if err := sh.Run(ctx); err != nil && err != context.DeadlineExceeded {
		return err
	} else if err != nil {
		log.Warn("drain timed out; remaining clients were dropped")
	}
	log.Info("worker stopped")
	return nil
}
