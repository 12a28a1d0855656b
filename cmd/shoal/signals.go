package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-gw/shoal/acceptor"
	"github.com/shoal-gw/shoal/shard"
)

// workerSignals handles the signals of a worker other than SIGTERM and
// SIGINT (which drain it through ctx):
//
//   - SIGHUP reloads the TLS certificate and key. New handshakes get the
//     new pair; connections already open keep theirs and stay open.
//   - SIGUSR2 drains the worker for a restart: like SIGTERM, but clients
//     are closed with 1012 (service restart) instead of 1001 (going away),
//     telling them to reconnect at once. shoal serve sends it to the old
//     worker of a rolling restart.
func workerSignals(ctx context.Context, drain context.CancelFunc, sh *shard.Shard, keys *acceptor.KeyPair, log *slog.Logger) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGUSR2:
				log.Info("SIGUSR2: draining for a restart")
				sh.Restarting()
				drain()
				return
			case keys == nil:
				log.Info("SIGHUP: no TLS certificate to reload")
			default:
				if err := keys.Reload(); err != nil {
					log.Error("SIGHUP: TLS certificate not reloaded; the previous one stays in use", "err", err)
				} else {
					log.Info("SIGHUP: TLS certificate reloaded")
				}
			}
		}
	}
}
