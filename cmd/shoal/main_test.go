package main

import (
	"bytes"
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
		{[]string{"serve", "--max-message", "65MiB"}, "max-message"},
		{[]string{"serve", "--max-message", "lots"}, "max-message"},
		{[]string{"serve", "stray"}, "stray"},
		{[]string{"serve", "--tls-cert", "cert.pem"}, "tls-key"},
		{[]string{"serve", "--compress", "nosuch"}, "nosuch"},
		{[]string{"serve", "--allowed-origins", "nosuch=https://a.example.com"}, "nosuch"},
		{[]string{"serve", "--allowed-origins", "echo="}, "allowed-origins"},
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

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "shoal ") {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
