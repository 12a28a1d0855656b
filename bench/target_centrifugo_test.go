package bench

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/shoal-gw/shoal/bench/client"
)

// centrifugoBinary builds the centrifugo peer as compare does. The first
// build on a machine compiles Centrifugo and its dependencies (minutes);
// after that the go tool's build cache makes it a link of seconds.
func centrifugoBinary(t testing.TB) string {
	t.Helper()
	dir, err := FindPeersDir(".")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bins, err := BuildPeers(ctx, dir, t.TempDir(), []string{centrifugoTarget})
	if err != nil {
		t.Fatal(err)
	}
	return bins[centrifugoTarget]
}

func TestCentrifugoConfigJSON(t *testing.T) {
	b, err := centrifugoConfigJSON(CentrifugoConfig{PingInterval: 2 * time.Second}, 4321, "sec", "key")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		UsageStats struct {
			Disabled bool `json:"disabled"`
		} `json:"usage_stats"`
		Admin, Prometheus struct {
			Enabled bool `json:"enabled"`
		}
		HTTPAPI struct {
			Key string `json:"key"`
		} `json:"http_api"`
		Client struct {
			Insecure     bool   `json:"insecure"`
			PingInterval string `json:"ping_interval"`
			Token        struct {
				HMACSecretKey string `json:"hmac_secret_key"`
			} `json:"token"`
		} `json:"client"`
		Channel struct {
			Namespaces []struct {
				Name                  string `json:"name"`
				PublishForSubscriber  bool   `json:"allow_publish_for_subscriber"`
				SubscribeForClient    bool   `json:"allow_subscribe_for_client"`
				SubscribeForAnonymous bool   `json:"allow_subscribe_for_anonymous"`
				HistorySize           *int   `json:"history_size"`
			} `json:"namespaces"`
		} `json:"channel"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.HTTPServer.Address != "127.0.0.1" || conf.HTTPServer.Port != 4321 {
		t.Errorf("listens on %+v, want loopback port 4321", conf.HTTPServer)
	}
	if !conf.UsageStats.Disabled || conf.Admin.Enabled || conf.Prometheus.Enabled {
		t.Errorf("usage stats %+v admin %+v prometheus %+v", conf.UsageStats, conf.Admin, conf.Prometheus)
	}
	if conf.HTTPAPI.Key != "key" || conf.Client.Token.HMACSecretKey != "sec" || conf.Client.Insecure || conf.Client.PingInterval != "2s" {
		t.Errorf("api %+v client %+v", conf.HTTPAPI, conf.Client)
	}
	ns := conf.Channel.Namespaces
	if len(ns) != 1 || ns[0].Name != CentrifugoNamespace || !ns[0].PublishForSubscriber || !ns[0].SubscribeForClient ||
		ns[0].SubscribeForAnonymous || ns[0].HistorySize == nil || *ns[0].HistorySize != 0 {
		t.Errorf("namespaces %+v", ns)
	}
}

// centrifugoPongless sends the connect command and then ignores the
// server's pings: a client Centrifugo must drop.
type centrifugoPongless struct {
	codec  Codec
	open   atomic.Bool
	closed chan error
}

func (h *centrifugoPongless) Open(c *client.Conn) {
	if _, err := h.codec.Start(c); err != nil {
		h.closed <- err
	}
}

func (h *centrifugoPongless) Message(_ *client.Conn, _ ws.OpCode, p []byte, _ int64) {
	if strings.HasPrefix(string(p), `{"id":1,"connect"`) {
		h.open.Store(true)
	}
}

func (h *centrifugoPongless) Closed(_ *client.Conn, err error) { h.closed <- err }

// TestCentrifugoServer runs the real Centrifugo as compare configures it:
// idle connections that answer its pings are held, one that does not is
// dropped, and a token signed with another secret is refused.
func TestCentrifugoServer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test builds Centrifugo and runs it")
	}
	bin := centrifugoBinary(t)
	start := func(t *testing.T, cfg CentrifugoConfig) *Target {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		tg, err := StartCentrifugo(ctx, bin, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := tg.Stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		})
		return tg
	}

	t.Run("Ping", func(t *testing.T) {
		tg := start(t, CentrifugoConfig{Insecure: true, PingInterval: time.Second, PongTimeout: 500 * time.Millisecond})
		if strings.Join(tg.Args, " ") != "--proto centrifugo" {
			t.Fatalf("args %q: an insecure server needs no secret", tg.Args)
		}
		// Held through three ping intervals, no connection is dropped.
		rep, out := runBench(t, append([]string{"connect", "--url", tg.URL + CentrifugoPath, "--conns", "10", "--rate", "200", "--hold", "3s",
			"--server-pid", strconv.Itoa(tg.PID)}, tg.Args...)...)
		if rep.Conns.Established != 10 || rep.Conns.Failed != 0 || rep.Conns.Dropped != 0 {
			t.Fatalf("conns %+v\n%s", rep.Conns, out)
		}
		if l := rep.Latency["handshake"]; l == nil || l.Count != 10 {
			t.Fatalf("handshakes %+v", l)
		}
		if rep.Server == nil || rep.Server.AfterKiB == 0 {
			t.Errorf("server memory not measured: %+v", rep.Server)
		}

		// The control: a connection that never answers is dropped.
		eng, err := client.New(client.Config{URL: tg.URL + CentrifugoPath})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eng.Close() })
		codec, _ := NewCodec(CodecConfig{Proto: ProtoCentrifugo, Conns: 1})
		h := &centrifugoPongless{codec: codec, closed: make(chan error, 1)}
		if _, err := eng.Dial(h, 0); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-h.closed:
			if !h.open.Load() || client.Cause(err) != client.CauseClosed {
				t.Fatalf("closed after connected=%v with %v, want a close by the server", h.open.Load(), err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a client that does not answer pings was not dropped")
		}
	})

	t.Run("WrongSecret", func(t *testing.T) {
		tg := start(t, CentrifugoConfig{})
		if len(tg.Args) != 4 || tg.Args[2] != "--hmac-secret" || tg.Args[3] == "" {
			t.Fatalf("args %q", tg.Args)
		}
		var out, errOut strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rep, _ := Main(ctx, Config{Args: []string{"connect", "--url", tg.URL + CentrifugoPath, "--proto", ProtoCentrifugo,
			"--hmac-secret", "not-" + tg.Args[3], "--conns", "5", "--hold", "100ms"}, Stdout: &out, Stderr: &errOut})
		if rep == nil || rep.Conns.Established != 0 || rep.Conns.Failed != 5 || rep.Conns.Failures["session: closed by server 3500"] != 5 {
			t.Fatalf("report %+v\n%s%s", rep, out.String(), errOut.String())
		}
		if strings.Contains(strings.Join(rep.Command, " "), tg.Args[3]) {
			t.Errorf("the report's command shows the secret: %q", rep.Command)
		}
	})
}
