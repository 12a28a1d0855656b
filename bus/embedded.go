package bus

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultMaxPayload is the embedded server's largest message. It sits above
// the gateway's default largest WebSocket message (1 MiB) with room for headers.
const DefaultMaxPayload = 8 << 20

// EmbeddedConfig configures an in-process NATS server.
type EmbeddedConfig struct {
	// Host to listen on; "127.0.0.1" when empty, so the bus is not exposed by accident.
	Host string
	// Port: 0 means 4222, -1 a random free port.
	Port int
	// StoreDir holds JetStream's data; required with JetStream.
	StoreDir string
	// JetStream enables persistence (history, key-value buckets).
	JetStream bool
	// MaxPayload is the largest message; DefaultMaxPayload when 0.
	MaxPayload int32
	// Logger receives the server's log at debug level and its warnings and
	// errors at theirs; nil discards them.
	Logger *slog.Logger
}

// Embedded is a NATS server running inside this process.
type Embedded struct {
	srv  *server.Server
	once sync.Once
}

// StartEmbedded starts a server and waits until it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 4222
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.JetStream && cfg.StoreDir == "" {
		return nil, fmt.Errorf("bus: embedded server: JetStream needs a store directory")
	}
	opts := &server.Options{
		ServerName: "shoal",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  cfg.JetStream,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		// The gateway's own signal handling decides when the bus stops.
		NoSigs: true,
		NoLog:  cfg.Logger == nil,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(natsLogger{cfg.Logger.With("component", "nats")}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("%w: %s:%d", ErrNotReady, cfg.Host, cfg.Port)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server is the underlying nats-server, for monitoring and tests.
func (e *Embedded) Server() *server.Server { return e.srv }

// connzLimit raises Connz's page of 1024 connections: the embedded server
// holds the host's workers, services and whatever else uses the bus.
const connzLimit = 1 << 20

// QueueSubscribers returns the client names (bus.Config.Name) of the
// connections that hold a subscription to exactly subject in queue group
// queue, one entry per connection. The server answers from its own
// table, so a name listed is a subscription the server has registered.
func (e *Embedded) QueueSubscribers(subject, queue string) ([]string, error) {
	// No Account or FilterSubject: with them, nats-server v2.15.2 reads the
	// id of a client still being set up without its lock (a data race the
	// race detector reports). Unfiltered, it snapshots each client under
	// the client's lock; the filtering is done here instead.
	cz, err := e.srv.Connz(&server.ConnzOptions{
		SubscriptionsDetail: true,
		Limit:               connzLimit,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: connections of %s: %w", subject, err)
	}
	var names []string
	for _, ci := range cz.Conns {
		for _, sd := range ci.SubsDetail {
			if sd.Subject == subject && sd.Queue == queue {
				names = append(names, ci.Name)
				break
			}
		}
	}
	return names, nil
}

// Shutdown stops the server and waits for it. Calling it twice is safe.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

// natsLogger routes nats-server's log into slog. Notices are debug: the
// server is chatty at start and shoal reports what matters itself.
type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
