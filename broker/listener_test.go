package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// acceptResult is what fakeListener.Accept returns next.
type acceptResult struct {
	c   net.Conn
	err error
}

// fakeListener hands out scripted Accept results, then blocks until Close.
type fakeListener struct {
	results chan acceptResult
	closed  chan struct{}
	once    sync.Once
}

func newFakeListener(script ...acceptResult) *fakeListener {
	f := &fakeListener{results: make(chan acceptResult, len(script)), closed: make(chan struct{})}
	for _, r := range script {
		f.results <- r
	}
	return f
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case r := <-f.results:
		return r.c, r.err
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *fakeListener) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883} }

// An accept loop waits out EMFILE (logging once) and keeps serving, and
// reports an accept error it cannot get past instead of ending silently
// (issue 15: a dead listener left the broker "ready"); stopping it is not
// a failure.
func TestListenerAcceptErrors(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	fatal := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EINVAL)}
	for _, tc := range []struct {
		name     string
		script   []acceptResult
		wantFail error
	}{
		{"EMFILE then a connection", []acceptResult{{err: emfile}, {err: emfile}, {err: emfile}, {c: pipeConn(t)}}, nil},
		{"a fatal error", []acceptResult{{c: pipeConn(t)}, {err: fatal}}, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			var logMu sync.Mutex
			l := &listener{id: "tcp-0", kind: ListenerTCP, ln: newFakeListener(tc.script...),
				log:   slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)),
				conns: map[net.Conn]struct{}{}, stop: make(chan struct{})}
			served := make(chan struct{}, 1)
			failed := make(chan error, 2)
			l.start(func(string, net.Conn) error { served <- struct{}{}; return nil }, func(err error) { failed <- err })
			select {
			case <-served:
			case <-time.After(10 * time.Second):
				t.Fatal("the connection after the errors was never served")
			}
			if tc.wantFail != nil {
				select {
				case err := <-failed:
					if !errors.Is(err, tc.wantFail) || !strings.Contains(err.Error(), "stopped accepting") {
						t.Errorf("failure = %v, want one wrapping %v", err, tc.wantFail)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a fatal accept error was not reported")
				}
			}
			l.stopAccepting()
			l.closeConns()
			select {
			case err := <-failed:
				if tc.wantFail == nil {
					t.Errorf("reported %v; stopping or EMFILE is no failure", err)
				} else {
					t.Errorf("reported twice: %v", err)
				}
			default:
			}
			logMu.Lock()
			defer logMu.Unlock()
			if n := strings.Count(logs.String(), "accept failed; retrying"); tc.wantFail == nil && n != 1 {
				t.Errorf("%d 'accept failed' lines, want 1 per episode:\n%s", n, logs.String())
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func pipeConn(t *testing.T) net.Conn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}
