package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// opsServer serves /healthz (the process answers), /readyz (listeners bound
// and store open) and /metrics (Prometheus text format).
type opsServer struct {
	ln  net.Listener
	srv *http.Server
}

func newOpsServer(addr string, g *Gateway) (*opsServer, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			// go_gc_heap_live_bytes: the heap marked live by the last GC,
			// the steady measure of memory a leak would grow.
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)},
		)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&metrics{g: g},
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !g.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway.http.address: %w", err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second, // the console's live stream lifts it for itself
		IdleTimeout:       opsIdleTimeout,   // without it, idle keep-alive connections were kept forever
		MaxHeaderBytes:    16 << 10,
	}
	if con := g.cw.con; con != nil && g.cw.ln == nil { // the console, on this server
		mux.Handle("/", con.Handler())
		srv.RegisterOnShutdown(con.Shutdown)
	}
	return &opsServer{ln: ln, srv: srv}, nil
}

// opsIdleTimeout closes a keep-alive connection of the ops endpoint that
// has been idle this long (a Prometheus scrape every 15s reconnects).
const opsIdleTimeout = 5 * time.Second

// Addr is the bound address (useful with port 0).
func (o *opsServer) Addr() net.Addr { return o.ln.Addr() }

// Run serves until ctx is done, then shuts down gracefully.
func (o *opsServer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- o.srv.Serve(o.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := o.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// HTTPAddr returns the ops endpoint's bound address, or "" when disabled or
// not started.
func (g *Gateway) HTTPAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.http == nil {
		return ""
	}
	return g.http.Addr().String()
}
