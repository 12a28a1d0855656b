package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// get fetches url with an optional bearer token.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The admin endpoint wants its bearer token everywhere but /healthz, and
// serves every process's profiles: its own, and each child's through the
// child's debug socket. The gateway's port serves none of it.
func TestAdminTokenAndProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	const token = "s3cret-admin-token"
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startServe(t, "--workers", "2", "--services", "echo=2,fanout", "--admin-token-file", tokenFile)
	f.adminToken = token

	if code, body := get(t, f.admin+"/healthz", ""); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz without token: %d %q, want 200 ok", code, body)
	}
	for _, path := range []string{"/metrics", "/procs", "/debug/pprof/", "/debug/pprof/worker/0/goroutine"} {
		if code, _ := get(t, f.admin+path, ""); code != http.StatusUnauthorized {
			t.Errorf("%s without token: %d, want 401", path, code)
		}
		if code, _ := get(t, f.admin+path, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", path, code)
		}
	}
	if code, body := get(t, f.admin+"/metrics", token); code != 200 || !strings.Contains(body, "shoal_connections") {
		t.Errorf("/metrics with token: %d, want 200 with shoal_connections", code)
	}

	// Each child's goroutine dump shows its own code: the shard package in
	// a worker, the service SDK in a service.
	waitUntil(t, "two workers", func() bool { return len(f.workers()) == 2 })
	for _, c := range []struct{ path, want string }{
		{"/debug/pprof/goroutine?debug=1", "supervisor"},
		{"/debug/pprof/worker/0/goroutine?debug=1", "shoal/shard"},
		{"/debug/pprof/worker/1/goroutine?debug=1", "shoal/shard"},
		{"/debug/pprof/service/echo/0/goroutine?debug=1", "shoal/service"},
		{"/debug/pprof/service/echo/1/goroutine?debug=1", "shoal/service"},
		{"/debug/pprof/service/fanout/0/goroutine?debug=1", "shoal/service"},
	} {
		code, body := get(t, f.admin+c.path, token)
		if code != 200 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d, want 200 with %q in the dump (got %.200q)", c.path, code, c.want, body)
		}
	}
	// Each service process is reached by its service's name and its own
	// slot: the command lines (NUL-separated) name the service and differ.
	cmdlines := make(map[string]bool)
	for _, c := range []struct{ path, name string }{
		{"/debug/pprof/service/echo/0/cmdline", "echo"},
		{"/debug/pprof/service/echo/1/cmdline", "echo"},
		{"/debug/pprof/service/fanout/0/cmdline", "fanout"},
	} {
		code, body := get(t, f.admin+c.path, token)
		if code != 200 || !strings.Contains(body, "service\x00"+c.name+"\x00") {
			t.Errorf("%s: %d %q, want the command line of service %s", c.path, code, body, c.name)
		}
		cmdlines[body] = true
	}
	if len(cmdlines) != 3 {
		t.Errorf("three service slots reached %d distinct processes", len(cmdlines))
	}
	if code, body := get(t, f.admin+"/debug/pprof/worker/0/heap?debug=1", token); code != 200 || !strings.Contains(body, "heap profile") {
		t.Errorf("worker heap profile: %d %.100q", code, body)
	}
	for _, path := range []string{"/debug/pprof/worker/7/heap", "/debug/pprof/worker/x/heap",
		"/debug/pprof/service/echo/2/heap", "/debug/pprof/service/nosuch/0/heap", "/debug/pprof/service/0/heap"} {
		if code, _ := get(t, f.admin+path, token); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
	gw := strings.Replace(f.ws, "ws://", "http://", 1)
	if code, _ := get(t, gw+"/debug/pprof/", token); code != http.StatusNotFound {
		t.Errorf("gateway port /debug/pprof/: %d, want 404", code)
	}
}
