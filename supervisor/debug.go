package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Every child serves net/http/pprof on a unix socket of its own in a
// directory only this user can enter; the admin endpoint proxies
// /debug/pprof/worker/<slot>/... and /debug/pprof/service/<name>/<slot>/...
// to it (a service's slots count its own processes, as /procs lists them). A socket, not a loopback port, so that other local users cannot
// profile the gateway, and so that nothing but the admin endpoint needs a
// bearer token.

// maxSocketPath leaves room below the kernel's 108-byte sun_path.
const maxSocketPath = 100

// debugDirFor picks the directory of the children's debug sockets: under
// the data directory when its paths stay short enough, else a private
// temporary directory.
func debugDirFor(dataDir string) (dir string, temp bool, err error) {
	if dataDir != "" {
		d, err := filepath.Abs(filepath.Join(dataDir, "run"))
		if err == nil && len(d)+len("/service-999-99999.sock") <= maxSocketPath {
			if err := os.MkdirAll(d, 0o700); err == nil {
				if err := os.Chmod(d, 0o700); err == nil {
					return d, false, nil
				}
			}
		}
	}
	d, err := os.MkdirTemp("", "shoal-run-")
	if err != nil {
		return "", false, fmt.Errorf("supervisor: debug socket directory: %w", err)
	}
	return d, true, nil
}

// debugRoutes serves the supervisor's own profiles and proxies the
// children's.
func (s *Supervisor) debugRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
		for _, ro := range []role{roleWorker, roleService} {
			if tail, ok := strings.CutPrefix(rest, string(ro)+"/"); ok {
				s.proxyDebug(w, r, ro, tail)
				return
			}
		}
		pprof.Index(w, r)
	})
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// proxyDebug forwards "<slot>/<profile>" of a worker, or
// "<name>/<slot>/<profile>" of a service, to the debug socket of the live
// process of that slot.
func (s *Supervisor) proxyDebug(w http.ResponseWriter, r *http.Request, ro role, tail string) {
	name, form := "", "<slot>"
	if ro == roleService {
		name, tail, _ = strings.Cut(tail, "/")
		form = "<name>/<slot>"
	}
	slotStr, profile, _ := strings.Cut(tail, "/")
	index, err := strconv.Atoi(slotStr)
	if err != nil {
		http.Error(w, fmt.Sprintf("want /debug/pprof/%s/%s/<profile>: slot %q is not a number", ro, form, slotStr), http.StatusNotFound)
		return
	}
	sock := s.debugSocket(ro, name, index)
	if sock == "" {
		http.Error(w, fmt.Sprintf("no live %s in slot %d (see /procs)", strings.TrimSpace(string(ro)+" "+name), index), http.StatusNotFound)
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "child"
			pr.Out.URL.Path = "/debug/pprof/" + profile
			pr.Out.URL.RawPath = ""
			pr.Out.Host = "child"
		},
		// A transport per request, so no keep-alive: an idle connection
		// left in it would hold an fd and two goroutines here, and an fd
		// and a goroutine in the child, for every request ever proxied.
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, fmt.Sprintf("%s %d: %v", ro, index, err), http.StatusBadGateway)
		},
	}
	proxy.ServeHTTP(w, r)
}

// debugSocket is the debug socket of the live process of a slot, or "".
// name is the service's, "" for a worker.
func (s *Supervisor) debugSocket(ro role, name string, index int) string {
	s.mu.Lock()
	slots := s.workers
	if ro == roleService {
		slots = s.svcs
	}
	var sl *slot
	for _, c := range slots {
		if c.index == index && c.name == name {
			sl = c
		}
	}
	s.mu.Unlock()
	if sl == nil {
		return ""
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.cur == nil {
		return ""
	}
	return sl.cur.debug
}
