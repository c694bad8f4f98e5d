package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// listener is one bound network endpoint. It replaces mochi's listeners so
// that every accept loop and connection goroutine is owned and waited for
// (mochi's Serve leaves them untracked), and so that the bound address is
// known before serving starts.
type listener struct {
	id    string
	kind  string
	ln    net.Listener // already wrapped with TLS for tls and wss
	log   *slog.Logger
	serve func(id string, c net.Conn) error // mochi's EstablishConnection
	// failed is called once if the listener stops accepting on its own
	// (the socket failed), with the reason.
	failed func(error)
	stop   chan struct{} // closed by stopAccepting: ends the accept backoff

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup // accept loop and connection goroutines
	httpSrv *http.Server
}

// bindListener binds the configured address; nothing is served yet.
func bindListener(id string, lc ListenerConfig, log *slog.Logger) (*listener, error) {
	ln, err := net.Listen("tcp", lc.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %s %s: %w", lc.Type, lc.Address, err)
	}
	if lc.TLS != nil {
		cfg, err := lc.TLS.tlsConfig()
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("listener %s %s: %w", lc.Type, lc.Address, err)
		}
		ln = tls.NewListener(ln, cfg)
	}
	return &listener{
		id:    id,
		kind:  lc.Type,
		ln:    ln,
		log:   log.With("listener", id, "type", lc.Type, "address", ln.Addr().String()),
		conns: map[net.Conn]struct{}{},
		stop:  make(chan struct{}),
	}, nil
}

// start serves connections in goroutines owned by l (waited for in close).
// A listener that stops accepting before stopAccepting reports it to
// failed.
func (l *listener) start(serve func(id string, c net.Conn) error, failed func(error)) {
	l.serve, l.failed = serve, failed
	if l.kind == ListenerWebsocket {
		up := &websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			CheckOrigin:  func(*http.Request) bool { return true },
		}
		l.httpSrv = &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ws, err := up.Upgrade(w, r, nil)
				if err != nil {
					return // Upgrade has answered the request
				}
				l.handle(&wsConn{Conn: ws.NetConn(), c: ws})
			}),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
		}
		l.wg.Go(func() {
			// Serve retries EMFILE and the like itself.
			if err := l.httpSrv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
				l.fail(err)
			}
		})
		return
	}
	l.wg.Go(func() {
		var delay time.Duration // backoff after a transient accept error
		for {
			c, err := l.ln.Accept()
			if err != nil {
				if l.isClosing() {
					return
				}
				if !transientAccept(err) {
					l.fail(err)
					return
				}
				// Out of descriptors or memory for a moment: retry as
				// net/http does (5ms doubling to 1s), log once per episode.
				if delay == 0 {
					l.log.Warn("accept failed; retrying", "err", err)
				}
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-l.stop:
					t.Stop()
					return
				}
				continue
			}
			if delay != 0 {
				l.log.Info("accepting again")
				delay = 0
			}
			if !l.track(c) {
				_ = c.Close()
				return
			}
			go func() {
				defer l.wg.Done() // Add done by track
				defer l.untrack(c)
				l.establish(c)
			}()
		}
	})
}

// transientAccept reports whether an accept error passes: the process or
// the system is out of descriptors or memory, or the client gave up.
func transientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *listener) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// fail reports that the listener stopped accepting on its own.
func (l *listener) fail(err error) {
	if l.isClosing() {
		return
	}
	l.failed(fmt.Errorf("listener %s %s stopped accepting: %w", l.kind, l.ln.Addr(), err))
}

// handle runs one websocket connection inside its HTTP handler goroutine.
func (l *listener) handle(c net.Conn) {
	if !l.track(c) {
		_ = c.Close()
		return
	}
	defer l.wg.Done() // Add done by track
	defer l.untrack(c)
	l.establish(c)
}

func (l *listener) establish(c net.Conn) {
	if err := l.serve(l.id, c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		l.log.Debug("connection ended", "remote", c.RemoteAddr().String(), "error", err)
	}
}

func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.conns[c] = struct{}{}
	l.wg.Add(1) // under mu, so never after closeConns has started waiting
	return true
}

func (l *listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	_ = c.Close()
}

// stopAccepting closes the listening socket; live connections continue.
func (l *listener) stopAccepting() {
	l.mu.Lock()
	if !l.closing {
		close(l.stop)
	}
	l.closing = true
	l.mu.Unlock()
	if l.httpSrv != nil {
		// Hijacked websocket connections are ours, not the server's: Close
		// only stops the HTTP side.
		_ = l.httpSrv.Close()
	} else {
		_ = l.ln.Close()
	}
}

// closeConns closes every live connection and waits for all goroutines.
func (l *listener) closeConns() {
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// wsConn adapts a websocket connection to net.Conn (binary frames carry the
// MQTT byte stream).
type wsConn struct {
	net.Conn // the underlying TCP/TLS connection, for addresses and deadlines
	c        *websocket.Conn
	r        io.Reader // current message reader, nil between messages
	wmu      sync.Mutex
}

func (w *wsConn) Read(p []byte) (int, error) {
	for {
		if w.r == nil {
			op, r, err := w.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("websocket: non-binary message")
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if errors.Is(err, io.EOF) {
			w.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *wsConn) Close() error { return w.c.Close() }

// shutdownListeners stops accepting on every listener; used on a failed start.
func shutdownListeners(ls []*listener) {
	for _, l := range ls {
		if l == nil {
			continue
		}
		l.stopAccepting()
		l.closeConns()
	}
}
