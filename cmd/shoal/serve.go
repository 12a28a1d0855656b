package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-gw/shoal/auth"
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
		keyFile  string
	)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address every worker listens on (SO_REUSEPORT)")
	fs.IntVar(&cfg.Workers, "workers", runtime.NumCPU(), "worker processes")
	fs.StringVar(&cfg.DataDir, "data", "shoal-data", "directory for the embedded NATS server's JetStream data and the token key (with --nats: only the key)")
	fs.StringVar(&cfg.NATS, "nats", "", "URL of an external NATS server or cluster (default: run one embedded)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", supervisor.DefaultNATSListen, "address of the embedded NATS server, for services in other processes (port 0: any)")
	fs.StringVar(&cfg.Admin, "admin", "", "address of the admin endpoint: /metrics, /procs, /healthz (default: off)")
	fs.Var(&services, "services", "bundled services to run, comma separated, each NAME or NAME=PROCESSES: "+bundledNames())
	fs.Var(&routes, "routes", "more service names clients may reach, served by processes of your own")
	fs.StringVar(&cfg.Prefix, "prefix", "shoal", "NATS subject prefix")
	fs.StringVar(&cfg.ShardPrefix, "shard-prefix", "", "first part of every shard id (default: the host name)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", supervisor.DefaultDrainTimeout, "how long a worker waits for its clients to close on shutdown")
	fs.StringVar(&keyFile, "token-key-file", "", "key file that signs and checks the clients' tokens, the same on every host of a fleet (default: <data>/token.key, created if missing)")
	gw.register(fs)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	names, instances, err := parseServices(services)
	if err != nil {
		return err
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
	keyPath, err := tokenKey(keyFile, cfg.DataDir)
	if err != nil {
		return err
	}
	cfg.Services, cfg.Instances = names, instances
	cfg.Routes = append(append([]string(nil), names...), routes...)
	common := []string{"--token-key-file=" + keyPath, "--log-level=" + logs.level, "--log-format=" + logs.format}
	cfg.WorkerArgs = append(forwarded(fs, gatewayFlagNames), common...)
	cfg.ServiceArgs = common
	cfg.Logger = log
	cfg.Output = os.Stderr
	sup, err := supervisor.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: rolling restart of the workers")
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

// maxInstances bounds the processes of one service on one host.
const maxInstances = 64

// parseServices reads --services: NAME runs one process of a bundled
// service, NAME=N runs N of them.
func parseServices(list []string) (names []string, instances map[string]int, err error) {
	instances = make(map[string]int, len(list))
	for _, entry := range list {
		name, count, hasCount := strings.Cut(entry, "=")
		if _, ok := bundled[name]; !ok {
			return nil, nil, usageError("--services: no bundled service %q (have: %s)", name, bundledNames())
		}
		if _, dup := instances[name]; dup {
			return nil, nil, usageError("--services: %q named twice; give its processes once, as %s=N", name, name)
		}
		n := 1
		if hasCount {
			n, err = strconv.Atoi(count)
			if err != nil || n < 1 || n > maxInstances {
				return nil, nil, usageError("--services: %s=%s: want a number of processes from 1 to %d", name, count, maxInstances)
			}
		}
		names = append(names, name)
		instances[name] = n
	}
	return names, instances, nil
}

// tokenKey makes sure the key that signs and checks tokens exists and
// returns its absolute path, which every child is given. A key file named
// on the command line must exist: on a fleet every host needs the same
// key, and one made up here would silently split it. The default file in
// the data directory is created the first time.
func tokenKey(flagPath, dataDir string) (string, error) {
	path := flagPath
	if path == "" {
		path = filepath.Join(dataDir, "token.key")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("token key file: %w", err)
	}
	if flagPath != "" {
		if _, err := auth.LoadKey(abs); err != nil {
			return "", fmt.Errorf("--token-key-file: %w", err)
		}
	} else if _, err := auth.LoadOrCreateKey(abs); err != nil {
		return "", err
	}
	return abs, nil
}
