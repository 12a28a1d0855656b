package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Config configures a bus connection.
type Config struct {
	// URL of the NATS server; nats.DefaultURL when empty.
	URL string
	// Name identifies the client in the server's monitoring.
	Name string
	// Logger receives disconnects, reconnects and async errors; nil discards them.
	Logger *slog.Logger
	// ConnectTimeout bounds the first connect, retried until then so that a
	// process started just before its NATS server still connects. Default 10s.
	ConnectTimeout time.Duration
	// OnError, if set, is called for asynchronous errors such as a slow
	// consumer, so the caller can count them.
	OnError func(error)
}

// Reconnect tuning. A short outage is buffered rather than failing publishes:
// the buffer holds about a second of chat traffic of a busy shard.
const (
	reconnectWait   = 250 * time.Millisecond
	reconnectJitter = 250 * time.Millisecond
	reconnectBuf    = 32 << 20
	dialTimeout     = 2 * time.Second
)

// Connect dials the bus and keeps the connection forever: it reconnects
// without limit after the first connect succeeded.
func Connect(cfg Config) (*nats.Conn, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	url := cfg.URL
	if url == "" {
		url = nats.DefaultURL
	}
	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.ReconnectBufSize(reconnectBuf),
		nats.Timeout(dialTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("bus reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("bus error", "subject", sub.Subject, "err", err)
			} else {
				log.Warn("bus error", "err", err)
			}
			if cfg.OnError != nil {
				cfg.OnError(err)
			}
		}),
	}
	deadline := time.Now().Add(timeout)
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		if !errors.Is(err, nats.ErrNoServers) || time.Now().After(deadline) {
			return nil, fmt.Errorf("bus: connect %s: %w", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ServiceClientName is the bus client name of the process pid running
// service: unique per process, so that the supervisor can tell which of
// its service processes have subscribed (Embedded.QueueSubscribers).
func ServiceClientName(service string, pid int) string {
	return "shoal-service-" + service + "-" + strconv.Itoa(pid)
}
