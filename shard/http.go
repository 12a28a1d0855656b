package shard

import (
	"fmt"
	"net/http"
)

// httpHandler serves the plain HTTP requests of the WebSocket port:
// /healthz for load balancers, and whatever Config.HTTP serves.
func (s *Shard) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "draining %s\n", s.cfg.ID)
			return
		}
		fmt.Fprintf(w, "ok %s\n", s.cfg.ID)
	})
	fallback := s.cfg.HTTP
	if fallback == nil {
		fallback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "not found: WebSocket endpoints are /ws/<service>, health is /healthz", http.StatusNotFound)
		})
	}
	mux.HandleFunc("/ws/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "upgrade required: "+r.URL.Path+" is a WebSocket endpoint", http.StatusUpgradeRequired)
	})
	mux.Handle("/", fallback)
	return mux
}
