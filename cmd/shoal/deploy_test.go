package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The files of deploy/ are checked here as far as this machine can: no
// Docker engine and no Kubernetes cluster exist to run them. Every YAML
// file parses; the shoal settings in them (systemd's shoal.toml, compose's
// environment and commands, the Kubernetes ConfigMap and args) are what
// `shoal serve --print-config` accepts; the NATS configurations pass
// nats-server -t; HAProxy's passes haproxy -c; the systemd units pass
// systemd-analyze verify; every sysctl exists on this kernel.

const deployDir = "../../deploy"

// printConfig runs `shoal serve ARGS --print-config` in this process with
// env set, and fails the test unless serve accepts the settings.
func printServeConfig(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	if code := run(append(append([]string{"serve"}, args...), "--print-config"), &out, &errOut); code != 0 {
		t.Fatalf("serve %q with %v refuses its settings (exit %d): %s", args, env, code, errOut.String())
	}
	return out.String()
}

// printedSetting returns the value serve prints for name.
func printedSetting(t *testing.T, printed, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` = (.*)$`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("no %s in\n%s", name, printed)
	}
	return strings.Trim(m[1], `"`)
}

func readYAML(t *testing.T, name string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("%s: %v", name, err)
		}
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no documents", name)
	}
	return docs
}

// dig walks nested maps by keys.
func dig(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: not a map on the way to %v", k, keys)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("no %q on the way to %v", k, keys)
		}
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func TestDeploySystemdConfig(t *testing.T) {
	p := printServeConfig(t, nil, "--config", filepath.Join(deployDir, "systemd", "shoal.toml"))
	if got := printedSetting(t, p, "workers"); got != "auto" {
		t.Errorf("workers = %s, want auto", got)
	}
	if got := printedSetting(t, p, "nats"); strings.Count(got, "nats://") != 3 {
		t.Errorf("nats = %s, want the three nodes", got)
	}
}

func TestDeployCompose(t *testing.T) {
	compose := readYAML(t, "docker/compose.yaml")[0]
	services := dig(t, compose, "services").(map[string]any)
	for _, name := range []string{"nats1", "nats2", "nats3", "shoal1", "shoal2", "shoal3", "haproxy"} {
		if _, ok := services[name]; !ok {
			t.Errorf("compose has no service %s", name)
		}
	}
	chat := 0
	for _, name := range []string{"shoal1", "shoal2", "shoal3"} {
		t.Run(name, func(t *testing.T) {
			svc := services[name]
			env := map[string]string{}
			for k, v := range dig(t, svc, "environment").(map[string]any) {
				env[k] = fmt.Sprint(v)
			}
			cmd := strs(dig(t, svc, "command"))
			if cmd[0] != "serve" {
				t.Fatalf("command %q, want serve", cmd)
			}
			p := printServeConfig(t, env, cmd[1:]...)
			if got := printedSetting(t, p, "nats"); got != "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222" {
				t.Errorf("nats = %s", got)
			}
			if got := printedSetting(t, p, "token-key-file"); got != "/run/secrets/token_key" {
				t.Errorf("token-key-file = %s", got)
			}
			if strings.Contains(printedSetting(t, p, "services"), "chat") {
				chat++
			} else if !strings.Contains(printedSetting(t, p, "routes"), "chat") {
				t.Errorf("%s neither runs nor routes chat", name)
			}
			if got := printedSetting(t, p, "max-conns-per-ip"); got != "-1" {
				t.Errorf("max-conns-per-ip = %s behind HAProxy, want -1", got)
			}
			if fmt.Sprint(dig(t, svc, "ulimits", "nofile", "hard")) != "1048576" {
				t.Errorf("nofile limit %v", dig(t, svc, "ulimits", "nofile"))
			}
		})
	}
	if chat != 2 {
		t.Errorf("chat runs on %d hosts, want 2", chat)
	}
	for _, name := range []string{"nats1", "nats2", "nats3"} {
		if got := fmt.Sprint(dig(t, services[name], "environment", "SERVER_NAME")); got != name {
			t.Errorf("%s's SERVER_NAME %s", name, got)
		}
	}
}

func TestDeployKubernetes(t *testing.T) {
	kinds := map[string]map[string]any{}
	for _, doc := range readYAML(t, "kubernetes/shoal.yaml") {
		kinds[fmt.Sprint(doc["kind"])] = doc
	}
	for _, k := range []string{"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} {
		if kinds[k] == nil {
			t.Fatalf("shoal.yaml has no %s", k)
		}
	}
	// serve reads the admin token file at start; the Secret mounts it there.
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := dig(t, kinds["ConfigMap"], "data", "shoal.toml").(string)
	if !strings.Contains(conf, `admin-token-file = "/etc/shoal/admin/admin.token"`) {
		t.Fatalf("the ConfigMap does not read the admin token from its Secret:\n%s", conf)
	}
	toml := filepath.Join(dir, "shoal.toml")
	if err := os.WriteFile(toml, []byte(strings.ReplaceAll(conf, "/etc/shoal/admin/admin.token", tokenFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := dig(t, kinds["Deployment"], "spec", "template", "spec")
	c := dig(t, pod, "containers").([]any)[0]
	args := strs(dig(t, c, "args"))
	if args[0] != "serve" || args[1] != "--config" {
		t.Fatalf("args %q", args)
	}
	p := printServeConfig(t, nil, "--config", toml)
	if got := printedSetting(t, p, "workers"); got != "auto" {
		t.Errorf("workers = %s, want auto (the CPU limit is the quota)", got)
	}
	if got := dig(t, c, "readinessProbe", "httpGet", "path"); got != "/healthz" {
		t.Errorf("readiness probe on %v", got)
	}
	if got := dig(t, c, "livenessProbe", "httpGet", "path"); got != "/healthz" {
		t.Errorf("liveness probe on %v", got)
	}
	wait := dig(t, c, "lifecycle", "preStop", "sleep", "seconds").(int)
	drain, err := time.ParseDuration(printedSetting(t, p, "drain-timeout"))
	if err != nil {
		t.Fatal(err)
	}
	grace := dig(t, pod, "terminationGracePeriodSeconds").(int)
	if time.Duration(grace)*time.Second < time.Duration(wait)*time.Second+drain+5*time.Second {
		t.Errorf("termination grace %ds does not cover preStop %ds, the drain timeout %v and a margin", grace, wait, drain)
	}
	// The admin endpoint listens beyond loopback for the probes, so it must want a token.
	// The admin endpoint listens beyond loopback for the probes, so it must want a token.
	if !strings.Contains(p, "# admin-token = (set, not shown)") {
		t.Errorf("admin endpoint on 0.0.0.0 without a token:\n%s", p)
	}
	if got := dig(t, kinds["Service"], "spec", "externalTrafficPolicy"); got != "Local" {
		t.Errorf("externalTrafficPolicy %v, want Local (client addresses kept)", got)
	}

	values := readYAML(t, "kubernetes/nats-values.yaml")[0]
	if dig(t, values, "config", "cluster", "enabled") != true || dig(t, values, "config", "cluster", "replicas") != 3 {
		t.Error("the NATS chart's values do not make a cluster of 3")
	}
	if dig(t, values, "config", "jetstream", "enabled") != true || dig(t, values, "config", "jetstream", "fileStore", "pvc", "enabled") != true {
		t.Error("the NATS chart's values do not enable JetStream on volumes")
	}
}

func TestDeployNATSConfigs(t *testing.T) {
	exe, err := natsServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, conf := range []string{"systemd/nats-server.conf", "docker/nats.conf"} {
		cmd := exec.Command(exe, "-t", "-c", filepath.Join(deployDir, conf))
		cmd.Env = append(os.Environ(), "SERVER_NAME=nats1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "is valid") {
			t.Errorf("nats-server -t %s: %v\n%s", conf, err, out)
		}
	}
}

func TestDeployHAProxy(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: apt-get install haproxy (make test installs it) to check deploy/'s balancer configuration")
	}
	out, err := exec.Command(haproxy, "-c", "-f", filepath.Join(deployDir, "docker", "haproxy.cfg")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	// The only warnings allowed: the backends' names, which resolve in Docker's network only.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "[WARNING]") && !strings.Contains(line, "could not resolve address") {
			t.Errorf("haproxy -c: %s", line)
		}
	}
}

func TestDeploySystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is not installed: apt-get install systemd (make test installs it) to check deploy/'s units")
	}
	exe, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	for _, unit := range []string{"shoal.service", "nats-server.service"} {
		b, err := os.ReadFile(filepath.Join(deployDir, "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		// verify wants the binaries it starts to exist: point them at one that does.
		text := strings.NewReplacer("/usr/local/bin/shoal", exe, "/usr/local/bin/nats-server", exe).Replace(string(b))
		path := filepath.Join(t.TempDir(), unit)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
		if !strings.Contains(text, "LimitNOFILE=") || !strings.Contains(text, "ExecReload=") {
			t.Errorf("%s lacks LimitNOFILE or ExecReload", unit)
		}
	}
}

// Every key of the sysctl file exists on this kernel, holds numbers, and
// is explained by a comment above it.
func TestDeploySysctl(t *testing.T) {
	f, err := os.Open(filepath.Join(deployDir, "sysctl", "99-shoal.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	commented, keys := false, 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			commented = false
			continue
		case strings.HasPrefix(line, "#"):
			commented = true
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok {
			t.Errorf("not key = value: %q", line)
			continue
		}
		keys++
		if !commented {
			t.Errorf("%s has no comment saying why", key)
		}
		if _, err := os.Stat(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))); err != nil {
			t.Errorf("%s: not a sysctl of this kernel: %v", key, err)
		}
		for _, n := range strings.Fields(val) {
			if _, err := strconv.ParseInt(n, 10, 64); err != nil {
				t.Errorf("%s = %s: not numbers", key, val)
			}
		}
	}
	if keys < 9 {
		t.Errorf("%d settings, want file-max, nr_open, somaxconn, the port range and the TCP memory ones", keys)
	}
}

// The image's binary is static: built as the Dockerfile builds it, it
// needs no dynamic loader, so it runs on an empty base.
func TestDeployStaticBinary(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if strings.Count(df, "\nFROM ") < 2 || !strings.Contains(df, "FROM scratch") || !regexp.MustCompile(`(?m)^USER 6553[0-9]`).MatchString(df) {
		t.Fatal("Dockerfile: want a build stage, a scratch stage and a numeric non-root USER")
	}
	m := regexp.MustCompile(`RUN CGO_ENABLED=0 go build -trimpath -ldflags "([^"]*)" -o /out/shoal \./cmd/shoal`).FindStringSubmatch(df)
	if m == nil {
		t.Fatal("Dockerfile: no CGO_ENABLED=0 go build -trimpath -ldflags ... of ./cmd/shoal")
	}
	// A directory others may enter: the binary runs as the image's user
	// below (t.TempDir's parent is private).
	dir, err := os.MkdirTemp("", "shoal-static")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "shoal")
	ldflags := strings.ReplaceAll(m[1], "${VERSION}", "static-check")
	// Without -trimpath, which changes nothing in how the binary links but
	// would miss the build cache and compile everything again.
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", exe, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags %q: %v\n%s", ldflags, err, out)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader: not static")
		}
	}
	f.Close()
	if out, err := exec.Command(exe, "version").Output(); err != nil || !strings.Contains(string(out), "static-check") {
		t.Fatalf("the static binary: %q %v", out, err)
	}

	// It serves as the image's user, 65532, who owns nothing but its data
	// directory.
	if os.Getuid() != 0 {
		t.Log("not root: serving as uid 65532 not tried")
		return
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(exe, "serve", "--addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--data", data, "--workers", "1", "--log-format", "json")
	serve.Dir = data
	serve.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}, Setpgid: true}
	var logs syncBuffer
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-serve.Process.Pid, syscall.SIGKILL) })
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), `"msg":"shoal serving"`) {
		select {
		case err := <-exited:
			t.Fatalf("serve as uid 65532 exited: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve as uid 65532 did not serve within a minute\n%s", logs.String())
		}
	}
	_ = serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve as uid 65532: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve as uid 65532 did not stop within a minute of SIGTERM")
	}
}

// syncBuffer is a bytes.Buffer safe for a process's two output streams.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
