package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shoal.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// printed runs serve --print-config and returns its output, failing on a
// non-zero exit.
func printed(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(append([]string{"serve", "--print-config"}, args...), &out, &errb); code != 0 {
		t.Fatalf("serve --print-config %v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

// setting finds "name = value" in printed output, with the comment line
// above it that names the source.
func setting(t *testing.T, out, table, name string) (value, source string) {
	t.Helper()
	if table != "" {
		i := strings.Index(out, "\n["+table+"]\n")
		if i < 0 {
			t.Fatalf("no [%s] in:\n%s", table, out)
		}
		out = out[i:]
		if j := strings.Index(out[2:], "\n["); j >= 0 {
			out = out[:j+2]
		}
	}
	re := regexp.MustCompile(`(?m)^# .*\(([^)]*)\)\n` + regexp.QuoteMeta(name) + ` = (.*)$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in:\n%s", name, out)
	}
	return m[2], m[1]
}

// Command line over environment over file over default, for serve and for
// a service's table.
func TestConfigLayers(t *testing.T) {
	cfg := writeConfig(t, `
addr = "127.0.0.9:9000"
workers = 5
max-queue = "1MiB"
services = ["echo=2", "fanout"]
allowed-origins = ["https://a.example", "https://b.example"]
compress = ["echo"]

[service.echo]
handlers = 7
prefix = "fromfile"
`)
	t.Setenv("SHOAL_MAX_QUEUE", "2MiB")
	t.Setenv("SHOAL_WORKERS", "4")
	t.Setenv("SHOAL_SERVICE_ECHO_PREFIX", "fromenv")
	t.Setenv("SHOAL_TOKEN_KEY_FILE", "/etc/shoal/token.key")
	out := printed(t, "--config", cfg, "--workers", "3")

	for _, c := range []struct{ table, name, value, source string }{
		{"", "workers", "3", "command line"},
		{"", "max-queue", "2097152", "env SHOAL_MAX_QUEUE"},
		{"", "addr", `"127.0.0.9:9000"`, "config " + cfg},
		{"", "services", `"echo=2,fanout"`, "config " + cfg},
		{"", "token-key-file", `"/etc/shoal/token.key"`, "env SHOAL_TOKEN_KEY_FILE"},
		{"", "allowed-origins", `"https://a.example,https://b.example"`, "config " + cfg},
		{"", "compress", `"echo"`, "config " + cfg},
		{"", "tls-cert", `""`, "default"},
		{"", "idle-timeout", `"1m15s"`, "default"},
		{"service.echo", "handlers", "7", "config " + cfg + " [service.echo]"},
		{"service.echo", "prefix", `"fromenv"`, "env SHOAL_SERVICE_ECHO_PREFIX"},
		{"service.fanout", "handlers", "0", "default"},
	} {
		v, src := setting(t, out, c.table, c.name)
		if v != c.value || src != c.source {
			t.Errorf("[%s] %s = %s (%s), want %s (%s)", c.table, c.name, v, src, c.value, c.source)
		}
	}
}

// What --print-config prints is a config file that gives the same settings.
func TestPrintConfigRoundTrip(t *testing.T) {
	first := printed(t, "--workers", "3", "--max-message", "2MiB", "--services", "echo,fanout", "--allowed-origins", "*")
	again := printed(t, "--config", writeConfig(t, first))
	strip := regexp.MustCompile(`(?m)^#.*$`)
	if a, b := strip.ReplaceAllString(first, ""), strip.ReplaceAllString(again, ""); a != b {
		t.Fatalf("settings changed through a round trip:\n%s\n---\n%s", a, b)
	}
}

// SHOAL_CONFIG names the file when --config does not.
func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("SHOAL_CONFIG", writeConfig(t, "workers = 6\n"))
	if v, _ := setting(t, printed(t), "", "workers"); v != "6" {
		t.Fatalf("workers = %s, want 6 from $SHOAL_CONFIG", v)
	}
}

// Every bad setting is refused at start with exit 2 and a message that
// names it.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, file string
		env        [2]string
		want       string
	}{
		{"UnknownKey", "max-queu = \"1MiB\"\n", [2]string{}, `unknown setting "max-queu" (did you mean "max-queue"?)`},
		{"BadValue", "workers = \"many\"\n", [2]string{}, "workers"},
		{"BadSize", "max-queue = \"lots\"\n", [2]string{}, "max-queue"},
		{"BadTOML", "workers = \n", [2]string{}, "shoal.toml"},
		{"Unlayered", "print-config = true\n", [2]string{}, `unknown setting "print-config"`},
		{"NoSuchService", "[service.nosuch]\nhandlers = 1\n", [2]string{}, `no bundled service "nosuch"`},
		{"ServiceKey", "[service.echo]\nhandler = 1\n", [2]string{}, `[service.echo]: unknown setting "handler" (did you mean "handlers"?)`},
		{"ServiceNotTable", "service = 3\n", [2]string{}, "service"},
		{"ServiceCount", "services = [\"echo=0\"]\n", [2]string{}, "echo=0"},
		{"ListWithComma", "services = [\"echo,fanout\"]\n", [2]string{}, "comma"},
		{"BadEnv", "", [2]string{"SHOAL_IDLE_TIMEOUT", "soon"}, "SHOAL_IDLE_TIMEOUT"},
		{"BadServiceEnv", "", [2]string{"SHOAL_SERVICE_ECHO_HANDLERS", "x"}, "SHOAL_SERVICE_ECHO_HANDLERS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env[0] != "" {
				t.Setenv(c.env[0], c.env[1])
			}
			args := []string{"serve", "--print-config"}
			if c.file != "" {
				args = append(args, "--config", writeConfig(t, c.file))
			}
			var out, errb bytes.Buffer
			if code := run(args, &out, &errb); code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) {
				t.Fatalf("stderr %q does not say %q", errb.String(), c.want)
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--config", "/nonexistent/shoal.toml"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "nonexistent") {
		t.Fatalf("missing file: exit %d, stderr %q", code, errb.String())
	}
}

// The TLS, compression and origin settings reach the workers from the
// config file and the environment as they do from the command line: serve
// forwards them, and the worker reads them back to the same shard.Config.
func TestGatewaySettingsForwarded(t *testing.T) {
	cfg := writeConfig(t, `
compress = ["echo"]
allowed-origins = ["https://app.example", "chat=https://chat.example"]
tls-cert = "/etc/shoal/cert.pem"
`)
	t.Setenv("SHOAL_TLS_KEY", "/etc/shoal/key.pem")
	serve := flag.NewFlagSet("serve", flag.ContinueOnError)
	var sg gatewayFlags
	sg.register(serve)
	if err := parse(serve, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := settle(serve, cfg, "SHOAL_", serveTable); err != nil {
		t.Fatal(err)
	}
	args := forwarded(serve, gatewayFlagNames)
	worker, got := parseGateway(t, args...)
	if c, k := worker.Lookup("tls-cert").Value.String(), worker.Lookup("tls-key").Value.String(); c != "/etc/shoal/cert.pem" || k != "/etc/shoal/key.pem" {
		t.Fatalf("worker TLS files %q and %q from %q", c, k, args)
	}
	if !reflect.DeepEqual(got.Compress, []string{"echo"}) ||
		!reflect.DeepEqual(got.AllowedOrigins, []string{"https://app.example"}) ||
		!reflect.DeepEqual(got.ServiceOrigins, map[string][]string{"chat": {"https://chat.example"}}) {
		t.Fatalf("worker config: compress %q, origins %q and %q, from %q", got.Compress, got.AllowedOrigins, got.ServiceOrigins, args)
	}
}
