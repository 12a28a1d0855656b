package main

import (
	"flag"
	"io"
	"reflect"
	"testing"

	"github.com/shoal-gw/shoal/shard"
)

func parseGateway(t *testing.T, args ...string) (*flag.FlagSet, shard.Config) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var gw gatewayFlags
	gw.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	var cfg shard.Config
	gw.apply(&cfg)
	return fs, cfg
}

// --allowed-origins takes origins for every service and SERVICE=ORIGIN
// entries, in one list or over repeated flags; serve forwards the whole of
// it to the workers, which read it back the same.
func TestAllowedOriginsFlag(t *testing.T) {
	fs, cfg := parseGateway(t,
		"--allowed-origins", "https://app.example.com, chat=https://chat.example.com",
		"--allowed-origins", "chat=https://chat.example.org,echo=*",
		"--compress", "all")
	wantAll := []string{"https://app.example.com"}
	wantPer := map[string][]string{
		"chat": {"https://chat.example.com", "https://chat.example.org"},
		"echo": {"*"},
	}
	if !reflect.DeepEqual(cfg.AllowedOrigins, wantAll) || !reflect.DeepEqual(cfg.ServiceOrigins, wantPer) {
		t.Fatalf("origins %q and %q, want %q and %q", cfg.AllowedOrigins, cfg.ServiceOrigins, wantAll, wantPer)
	}
	if !reflect.DeepEqual(cfg.Compress, []string{"*"}) {
		t.Fatalf("--compress all gave %q", cfg.Compress)
	}
	_, again := parseGateway(t, forwarded(fs, gatewayFlagNames)...)
	if !reflect.DeepEqual(again.AllowedOrigins, wantAll) || !reflect.DeepEqual(again.ServiceOrigins, wantPer) {
		t.Fatalf("forwarded %q read back as %q and %q", forwarded(fs, gatewayFlagNames), again.AllowedOrigins, again.ServiceOrigins)
	}
	// The global form alone still means what it did.
	if _, cfg := parseGateway(t, "--allowed-origins", "https://a.example.com,*"); !reflect.DeepEqual(cfg.AllowedOrigins, []string{"https://a.example.com", "*"}) || cfg.ServiceOrigins != nil {
		t.Fatalf("global origins %q, %q", cfg.AllowedOrigins, cfg.ServiceOrigins)
	}
}
