package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad input is refused with exit code 2 and a message naming the problem.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "usage"},
		{[]string{"dance"}, "dance"},
		{[]string{"serve", "--workers", "x"}, "workers"},
		{[]string{"serve", "--services", "nosuch"}, "nosuch"},
		{[]string{"serve", "--services", "nosuch=2"}, "nosuch"},
		{[]string{"serve", "--services", "echo=0"}, "echo=0: want a number of processes"},
		{[]string{"serve", "--services", "echo=x"}, "echo=x: want a number of processes"},
		{[]string{"serve", "--services", "echo=-1"}, "echo=-1: want a number of processes"},
		{[]string{"serve", "--services", "echo="}, "echo=: want a number of processes"},
		{[]string{"serve", "--services", "echo=65"}, "from 1 to 64"},
		{[]string{"serve", "--services", "echo,fanout,echo=2"}, "\"echo\" named twice"},
		{[]string{"serve", "--max-message", "65MiB"}, "max-message"},
		{[]string{"serve", "--max-message", "lots"}, "max-message"},
		{[]string{"serve", "stray"}, "stray"},
		{[]string{"serve", "--tls-cert", "cert.pem"}, "tls-key"},
		{[]string{"serve", "--compress", "nosuch"}, "nosuch"},
		{[]string{"serve", "--allowed-origins", "nosuch=https://a.example.com"}, "nosuch"},
		{[]string{"serve", "--allowed-origins", "echo="}, "allowed-origins"},
		{[]string{"serve", "--slow-policy", "sometimes"}, "want close or drop-oldest"},
		{[]string{"serve", "--slow-policy", "close,drop-oldest"}, "given twice"},
		{[]string{"serve", "--slow-policy", "echo=close,echo=drop-oldest"}, "echo is given twice"},
		{[]string{"serve", "--slow-policy", "a.b=close"}, "not a service name"},
		{[]string{"serve", "--slow-policy", "ticker=drop-oldest"}, "ticker is not a service clients reach"},
		{[]string{"worker", "--shard", "w1", "--services", "echo", "--slow-policy", "ticker=drop-oldest"}, "ticker"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != 2 {
			t.Errorf("shoal %v: exit %d, want 2 (stderr %q)", c.args, code, errb.String())
			continue
		}
		if !strings.Contains(strings.ToLower(errb.String()), c.want) {
			t.Errorf("shoal %v: stderr %q does not mention %q", c.args, errb.String(), c.want)
		}
	}
}

// A key file named on the command line must exist: serve and worker stop
// before starting anything, saying which file is missing.
func TestMissingKeyFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "token.key")
	for _, args := range [][]string{
		{"serve", "--data", t.TempDir(), "--token-key-file", missing},
		{"worker", "--shard", "w1", "--token-key-file", missing},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no key file: "+missing) {
			t.Errorf("shoal %v: exit %d, stderr %q; want 1 naming the missing file", args, code, errb.String())
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a key file was made up")
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "shoal ") {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
