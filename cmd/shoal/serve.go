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

// defaultAdmin keeps the admin endpoint on loopback unless told otherwise.
const defaultAdmin = "127.0.0.1:8081"

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      supervisor.Config
		services = listFlag{"echo", "chat"}
		routes   listFlag
		gw       gatewayFlags
		logs     logFlags
		config   string
		printCfg bool
		keyFile  string

		adminTokenFile string
	)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address every worker listens on (SO_REUSEPORT)")
	fs.Var((*workersFlag)(&cfg.Workers), "workers", `worker processes, or "auto": one per CPU available to the process, cgroup limits respected`)
	fs.StringVar(&cfg.DataDir, "data", "shoal-data", "directory for the embedded NATS server's JetStream data and the token key (with --nats: only the key)")
	fs.StringVar(&cfg.NATS, "nats", "", "URL of an external NATS server or cluster (default: run one embedded)")
	fs.StringVar(&cfg.NATSListen, "nats-listen", supervisor.DefaultNATSListen, "address of the embedded NATS server, for services in other processes (port 0: any)")
	fs.StringVar(&cfg.Admin, "admin", defaultAdmin, `address of the admin endpoint: /metrics, /procs, /healthz, /debug/pprof/ ("off": none)`)
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token the admin endpoint requires (prefer $SHOAL_ADMIN_TOKEN or --admin-token-file: a flag shows in ps)")
	fs.StringVar(&adminTokenFile, "admin-token-file", "", "file holding the admin endpoint's bearer token")
	fs.Var(&services, "services", "bundled services to run, comma separated, each NAME or NAME=PROCESSES: "+bundledNames())
	fs.Var(&routes, "routes", "more service names clients may reach, served by processes of your own")
	fs.StringVar(&cfg.Prefix, "prefix", "shoal", "NATS subject prefix")
	fs.StringVar(&cfg.ShardPrefix, "shard-prefix", "", "first part of every shard id (default: the host name)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", supervisor.DefaultDrainTimeout, "how long a worker waits for its clients to close on shutdown")
	fs.StringVar(&keyFile, "token-key-file", "", "key file that signs and checks the clients' tokens, the same on every host of a fleet (default: <data>/token.key, created if missing)")
	fs.StringVar(&config, "config", "", "TOML file of settings (default $"+configEnv+"); flags and SHOAL_* variables override it")
	fs.BoolVar(&printCfg, "print-config", false, "print the effective settings as TOML, each with where it came from, and exit")
	gw.register(fs)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	src, file, err := settle(fs, config, "SHOAL_", serveTable)
	if err != nil {
		return err
	}
	names, instances, err := parseServices(services)
	if err != nil {
		return err
	}
	if err := gw.checkServices(append(append([]string(nil), names...), routes...)); err != nil {
		return err
	}
	svcSettings, err := settleServices(file, names, stderr)
	if err != nil {
		return err
	}
	if cfg.Admin == "off" {
		cfg.Admin = ""
	}
	if adminTokenFile != "" {
		if cfg.AdminToken != "" {
			return usageError("--admin-token and --admin-token-file: give one")
		}
		b, err := os.ReadFile(adminTokenFile)
		if err != nil {
			return usageError("--admin-token-file: %v", err)
		}
		if cfg.AdminToken = strings.TrimSpace(string(b)); cfg.AdminToken == "" {
			return usageError("--admin-token-file %s is empty", adminTokenFile)
		}
	}
	if printCfg {
		printConfig(stdout, fs, src, "")
		for _, ss := range svcSettings {
			printConfig(stdout, ss.fs, ss.src, "service."+ss.name)
		}
		return nil
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
	// The default window shrinks to fit a short drain timeout (see
	// shard.Config.DrainWindow); one given explicitly must fit.
	if src["drain-window"] != "default" && gw.drainWindow >= cfg.DrainTimeout {
		return usageError("--drain-window %v: must be shorter than --drain-timeout %v, which also waits for the last clients to answer", gw.drainWindow, cfg.DrainTimeout)
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
	keyPath, err := tokenKey(keyFile, cfg.DataDir)
	if err != nil {
		return err
	}
	cfg.Services, cfg.Instances = names, instances
	cfg.Routes = append(append([]string(nil), names...), routes...)
	common := []string{"--token-key-file=" + keyPath, "--log-level=" + logs.level, "--log-format=" + logs.format}
	cfg.WorkerArgs = append(forwarded(fs, gatewayFlagNames), common...)
	cfg.ServiceArgs = append([]string(nil), common...)
	if file != nil {
		// Each service reads its own [service.NAME] table.
		cfg.ServiceArgs = append(cfg.ServiceArgs, "--config="+file.path)
	}
	cfg.Logger = log
	cfg.Output = os.Stderr
	sup, err := supervisor.New(cfg)
	if err != nil {
		return err
	}
	if n := sup.GOMAXPROCS(); n > 0 {
		runtime.GOMAXPROCS(n)
		log.Info("GOMAXPROCS of every process: the CPUs shared among the workers (set GOMAXPROCS to choose)", "procs", n, "workers", sup.Workers())
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
				rctx, cancel := context.WithTimeout(ctx, time.Duration(sup.Workers()+1)*(cfg.DrainTimeout+20*time.Second))
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

// settledService is a bundled service's settings as serve sees them.
type settledService struct {
	name string
	fs   *flag.FlagSet
	src  flagSource
}

// settleServices checks the config file's [service.NAME] tables against
// the services' own flags, so a misspelt setting fails serve at start
// rather than a child in its restart loop, and returns the settings of
// each service serve runs, for --print-config.
func settleServices(file *configFile, services []string, stderr io.Writer) ([]settledService, error) {
	if file != nil {
		for name := range file.services {
			if _, ok := bundled[name]; !ok {
				return nil, usageError("config %s: [service.%s]: no bundled service %q (have: %s)", file.path, name, name, bundledNames())
			}
		}
	}
	var out []settledService
	seen := make(map[string]bool)
	names := append([]string(nil), services...)
	if file != nil {
		for name := range file.services {
			names = append(names, name)
		}
	}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		fs, _ := serviceFlags(name, stderr)
		var tab map[string]any
		what := "config"
		if file != nil {
			tab = file.services[name]
			what = "config " + file.path + " [service." + name + "]"
		}
		src, err := layer(fs, serviceEnvPrefix(name), os.Environ(), tab, what)
		if err != nil {
			return nil, err
		}
		out = append(out, settledService{name: name, fs: fs, src: src})
	}
	return out, nil
}
