package gateway

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A component that fails while the gateway runs stops the gateway: Run
// returns a *ComponentError naming it, after one log line with the cause,
// and the gateway is no longer ready (issue 15). Here the ops endpoint's
// socket is closed under it.
func TestComponentFailureStopsGateway(t *testing.T) {
	dir := t.TempDir()
	cfg, ce := parse(t, `gateway:
  id: gw
  data_dir: `+filepath.Join(dir, "data")+`
  http: {address: "127.0.0.1:0"}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:0"}]
devices:
  - {name: d, driver: sim, poll: 10ms, points: [{name: n, sim: counter}]}
`)
	if ce != nil {
		t.Fatal(ce)
	}
	var logs syncBuf
	var g *Gateway
	readyAtLog := make(chan bool, 1) // g.Ready() when the failure is logged
	log := slog.New(onMessage{slog.NewTextHandler(&logs, nil), "component failed; stopping", func() { readyAtLog <- g.Ready() }})
	g, err := New(cfg, Drivers(log), log)
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- g.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for !g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("not ready after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	g.mu.Lock()
	ln := g.http.ln
	g.mu.Unlock()
	ln.Close()

	select {
	case err = <-runErr:
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30s after its http component failed")
	}
	var failed *ComponentError
	if !errors.As(err, &failed) || failed.Component != "http" || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run = %v, want a *ComponentError for http wrapping net.ErrClosed", err)
	}
	if <-readyAtLog {
		t.Error("still ready (/readyz 200) when the failure was logged")
	}
	var lines []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], `msg="component failed; stopping" component=http`) || !strings.Contains(lines[0], "closed") {
		t.Errorf("want one error line naming http and the cause, got:\n%s", strings.Join(lines, ""))
	}
}

// onMessage calls f when a record with message msg is logged.
type onMessage struct {
	slog.Handler
	msg string
	f   func()
}

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.f()
	}
	return h.Handler.Handle(ctx, r)
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
