package broker

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// flakyListener fails Accept with EMFILE fail times, then hands out one
// end of a pipe.
type flakyListener struct {
	mu     sync.Mutex
	fail   int
	closed chan struct{}
}

func (f *flakyListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	select {
	case <-f.closed:
		return nil, net.ErrClosed
	default:
	}
	a, _ := net.Pipe()
	return a, nil
}

func (f *flakyListener) Close() error   { close(f.closed); return nil }
func (f *flakyListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883} }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// An accept error (EMFILE) does not end the accept loop: it is retried
// with a back-off, logged once, and the listener reports itself down until
// it accepts again.
func TestAcceptRetriesAfterEMFILE(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs lockedBuffer
		fl := &flakyListener{fail: 50, closed: make(chan struct{})}
		rl := newRetryListener(fl, slog.New(slog.NewTextHandler(&logs, nil)))
		var wg sync.WaitGroup
		var got net.Conn
		var err error
		wg.Go(func() { got, err = rl.Accept() })
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if rl.downSince().IsZero() {
			t.Fatal("listener failing with EMFILE is not reported down")
		}
		b := &Broker{listeners: []*listener{{retry: rl}}}
		if addr, _, down := b.ListenerDown(); !down || addr != "127.0.0.1:1883" {
			t.Errorf("Broker.ListenerDown = %q, %v; want the failing listener (readiness and the watchdog use it)", addr, down)
		}
		wg.Wait()
		if err != nil || got == nil {
			t.Fatalf("Accept after the errors: %v", err)
		}
		_ = got.Close()
		if !rl.downSince().IsZero() {
			t.Error("listener still reported down after accepting")
		}
		if _, _, down := b.ListenerDown(); down {
			t.Error("Broker.ListenerDown still reports the listener after it accepted")
		}
		out := logs.String()
		if n := strings.Count(out, "cannot accept"); n != 1 {
			t.Errorf("%d error lines for one run of 50 accept errors, want 1:\n%s", n, out)
		}
		if !strings.Contains(out, "accepting connections again") {
			t.Errorf("recovery not logged:\n%s", out)
		}
		// Closing during a back-off ends Accept at once.
		fl.mu.Lock()
		fl.fail = 1 << 30
		fl.mu.Unlock()
		wg.Go(func() { _, err = rl.Accept() })
		time.Sleep(time.Second)
		_ = rl.Close()
		wg.Wait()
		if err != net.ErrClosed {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	})
}
