package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// centrifugoTarget is the target name of the Centrifugo server.
const centrifugoTarget = "centrifugo"

// CentrifugoConfig is how StartCentrifugo configures the server. The zero
// value is what compare runs: token auth with a fresh HMAC secret and
// Centrifugo's own ping interval.
type CentrifugoConfig struct {
	// Insecure starts the server with client.insecure: no tokens, every
	// client may subscribe and publish.
	Insecure bool
	// PingInterval and PongTimeout are the server's client.ping_interval
	// and client.pong_timeout; zero keeps Centrifugo's defaults (25s, 8s).
	PingInterval, PongTimeout time.Duration
}

// How often the readiness probe asks, and how many times a start that
// lost its port to another process is tried.
const (
	centrifugoProbeEvery = 20 * time.Millisecond
	centrifugoStartTries = 3
)

// StartCentrifugo writes a configuration for the Centrifugo binary bin
// (built by BuildPeers) into a temporary directory, starts the server on
// a free loopback port and waits until its server API answers. The
// target's Args are the scenario flags that speak to it.
func StartCentrifugo(ctx context.Context, bin string, cfg CentrifugoConfig) (*Target, error) {
	var err error
	for range centrifugoStartTries {
		var t *Target
		t, err = startCentrifugo(ctx, bin, cfg)
		if err == nil {
			return t, nil
		}
		// Centrifugo cannot listen on port 0 and say which port it got, so
		// the port is picked first; another process may take it meanwhile.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

func startCentrifugo(ctx context.Context, bin string, cfg CentrifugoConfig) (*Target, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("%w: centrifugo: %w", ErrTarget, err)
	}
	secret, apiKey := randomHex(32), randomHex(16)
	conf, err := centrifugoConfigJSON(cfg, port, secret, apiKey)
	if err != nil {
		return nil, fmt.Errorf("%w: centrifugo: %w", ErrTarget, err)
	}
	dir, err := os.MkdirTemp("", "shoal-bench-centrifugo-")
	if err != nil {
		return nil, fmt.Errorf("%w: centrifugo: %w", ErrTarget, err)
	}
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: centrifugo: %w", ErrTarget, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	t := &Target{Name: centrifugoTarget, Proto: ProtoCentrifugo, tmpDir: dir, workDir: dir,
		Args: []string{"--proto", ProtoCentrifugo}}
	if !cfg.Insecure {
		t.Args = append(t.Args, "--hmac-secret", secret)
	}
	// It logs JSON lines to stdout; this one comes just before it listens.
	err = t.start(ctx, bin, []string{"--config", path}, func(line []byte) (serving, bool) {
		var rec struct{ Message string }
		if json.Unmarshal(line, &rec) != nil || !strings.HasPrefix(rec.Message, "serving ") || !strings.HasSuffix(rec.Message, addr) {
			return serving{}, false
		}
		return serving{url: "ws://" + addr}, true
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := t.await(ctx); err != nil {
		return nil, err
	}
	if err := waitCentrifugoAPI(ctx, t, "http://"+addr+"/api/info", apiKey); err != nil {
		_ = t.Stop()
		return nil, err
	}
	return t, nil
}

// centrifugoConfigJSON is the server's configuration: loopback only, one
// namespace for the bench's rooms with history, presence and join/leave
// messages off (fanout measures delivery, nothing else), subscribers
// allowed to publish into their channel, the server HTTP API on the same
// port behind a key, no admin, metrics or usage statistics, and the log
// on stdout at info, where the bench keeps it.
func centrifugoConfigJSON(cfg CentrifugoConfig, port int, secret, apiKey string) ([]byte, error) {
	client := map[string]any{
		// No browser origins: the bench's client sends no Origin header.
		"allowed_origins": []string{},
	}
	if cfg.Insecure {
		client["insecure"] = true
	} else {
		client["token"] = map[string]any{"hmac_secret_key": secret}
	}
	if cfg.PingInterval > 0 {
		client["ping_interval"] = cfg.PingInterval.String()
	}
	if cfg.PongTimeout > 0 {
		client["pong_timeout"] = cfg.PongTimeout.String()
	}
	conf := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "info"},
		"usage_stats": map[string]any{"disabled": true},
		"admin":       map[string]any{"enabled": false},
		"prometheus":  map[string]any{"enabled": false},
		"http_api":    map[string]any{"key": apiKey},
		"client":      client,
		"channel": map[string]any{
			"namespaces": []map[string]any{{
				"name":                          CentrifugoNamespace,
				"allow_subscribe_for_client":    true,
				"allow_publish_for_subscriber":  true,
				"allow_subscribe_for_anonymous": cfg.Insecure,
				"allow_publish_for_anonymous":   cfg.Insecure,
				"history_size":                  0,
				"presence":                      false,
				"join_leave":                    false,
			}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// waitCentrifugoAPI polls the server API's info method until it answers
// 200: the log line that says it serves comes just before it listens.
func waitCentrifugoAPI(ctx context.Context, t *Target, url, key string) error {
	deadline := time.Now().Add(targetStartTimeout)
	hc := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte("{}")))
		if err != nil {
			return fmt.Errorf("%w: centrifugo: %w", ErrTarget, err)
		}
		req.Header.Set("X-API-Key", key)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("server API answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.exited:
			return fmt.Errorf("%w: centrifugo exited (%v)%s", ErrTarget, t.waitErr, t.tail.String())
		case <-time.After(centrifugoProbeEvery):
		}
	}
	return fmt.Errorf("%w: centrifugo's server API did not answer within %s: %v%s", ErrTarget, targetStartTimeout, last, t.tail.String())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
