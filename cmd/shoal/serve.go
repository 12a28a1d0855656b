package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/shoal-gw/shoal/bus"
	"github.com/shoal-gw/shoal/supervisor"
)

func runServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      supervisor.Config
		services = listFlag{"echo"}
		routes   listFlag
		gw       gatewayFlags
		logs     logFlags
	)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address every worker listens on (SO_REUSEPORT)")
	fs.IntVar(&cfg.Workers, "workers", runtime.NumCPU(), "worker processes")
	fs.StringVar(&cfg.DataDir, "data", "shoal-data", "directory for the embedded NATS server's JetStream data")
	fs.StringVar(&cfg.NATS, "nats", "", "URL of an external NATS server or cluster (default: run one embedded)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", supervisor.DefaultNATSListen, "address of the embedded NATS server, for services in other processes (port 0: any)")
	fs.StringVar(&cfg.Admin, "admin", "", "address of the admin endpoint: /metrics, /procs, /healthz (default: off)")
	fs.Var(&services, "services", "bundled services to run, comma separated: "+bundledNames())
	fs.Var(&routes, "routes", "more service names clients may reach, served by processes of your own")
	fs.StringVar(&cfg.Prefix, "prefix", "shoal", "NATS subject prefix")
	fs.StringVar(&cfg.ShardPrefix, "shard-prefix", "", "first part of every shard id (default: the host name)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", supervisor.DefaultDrainTimeout, "how long a worker waits for its clients to close on shutdown")
	gw.register(fs)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	for _, name := range services {
		if _, ok := bundled[name]; !ok {
			return usageError("--services: no bundled service %q (have: %s)", name, bundledNames())
		}
	}
	// A client message crosses the bus as one NATS message with a few
	// headers; the embedded server's max_payload follows --max-message.
	// NATS itself refuses payloads over 64 MiB.
	const busSlack, busMax = 64 << 10, 64 << 20
	if need := int64(gw.maxMessage) + busSlack; need > busMax {
		return usageError("--max-message %d: at most %d bytes fit one NATS message", int64(gw.maxMessage), busMax-busSlack)
	} else if need > bus.DefaultMaxPayload {
		cfg.NATSMaxPayload = int32(need)
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	// Workers load the pair themselves; loading it here refuses a bad one
	// before anything starts.
	keys, err := gw.keyPair()
	if err != nil {
		return err
	}
	cfg.TLS = keys != nil
	cfg.Services = services
	cfg.Routes = append(append([]string(nil), services...), routes...)
	if err := gw.checkServices(cfg.Routes); err != nil {
		return err
	}
	cfg.WorkerArgs = append(forwarded(fs, gatewayFlagNames), "--log-level="+logs.level, "--log-format="+logs.format)
	cfg.ServiceArgs = []string{"--log-level=" + logs.level, "--log-format=" + logs.format}
	cfg.Logger = log
	cfg.Output = os.Stderr
	sup, err := supervisor.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-hup:
				// Both reload the workers' TLS certificates in place;
				// SIGHUP then replaces the workers one at a time too, and
				// the new ones start with the new certificate.
				sup.ReloadWorkers()
				if sig == syscall.SIGUSR1 {
					log.Info("SIGUSR1: workers reload their TLS certificates")
					continue
				}
				log.Info("SIGHUP: TLS certificates reloaded, rolling restart of the workers")
				rctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Workers+1)*(cfg.DrainTimeout+20*time.Second))
				if err := sup.RollingRestart(rctx); err != nil {
					log.Error("rolling restart", "err", err)
				} else {
					log.Info("rolling restart done")
				}
				cancel()
			}
		}
	}()
	return sup.Run(ctx)
}
