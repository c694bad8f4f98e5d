package broker

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// retryListener keeps a listener accepting through transient accept errors
// (see transientAccept: out of file descriptors, EMFILE and ENFILE, of
// buffers or memory, a connection aborted while queued), which are
// retried with a back-off from 5 ms doubling to 1 s, as net/http's server
// does; the first error of a run is logged once (error level) and the
// recovery once (info level), at most once a minute, as descriptors that
// run out tend to flap. While errors last the listener is down
// (see downSince), which readiness and the watchdog look at.
type retryListener struct {
	net.Listener
	log *slog.Logger

	down      atomic.Int64 // unix ns of the first error of the current run; 0 when accepting
	loggedAt  time.Time    // when an outage was last logged (Accept's goroutine only)
	logged    bool         // the current outage was logged
	closeOnce sync.Once
	done      chan struct{}
}

func newRetryListener(ln net.Listener, log *slog.Logger) *retryListener {
	return &retryListener{Listener: ln, log: log, done: make(chan struct{})}
}

const (
	acceptLogEvery = time.Minute // outages within this of a logged one are not logged (flapping)
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

func (l *retryListener) Accept() (net.Conn, error) {
	var delay time.Duration
	failures := 0
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if since := l.down.Swap(0); since != 0 && l.logged {
				l.logged = false
				l.log.Info("listener accepting connections again",
					"down_for", time.Since(time.Unix(0, since)).Round(time.Millisecond).String(), "failed_accepts", failures)
			}
			return c, nil
		}
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) || !transientAccept(err) {
			return nil, err // the caller fails the broker (listener.fail)
		}
		failures++
		if l.down.CompareAndSwap(0, time.Now().UnixNano()) && time.Since(l.loggedAt) > acceptLogEvery {
			l.loggedAt, l.logged = time.Now(), true
			l.log.Error("listener cannot accept connections; retrying (no new client can connect meanwhile)", "error", err)
		}
		delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// Close stops a pending retry and closes the listener.
func (l *retryListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// downSince returns when the current run of accept errors began, or the
// zero time when the listener accepts.
func (l *retryListener) downSince() time.Time {
	if n := l.down.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// ListenerDown reports a listener that cannot accept connections now
// (see retryListener): its address and since when. ok is false when every
// listener accepts. Safe for concurrent use.
func (b *Broker) ListenerDown() (addr string, since time.Time, ok bool) {
	b.mu.Lock()
	ls := b.listeners
	b.mu.Unlock()
	for _, l := range ls {
		if t := l.retry.downSince(); !t.IsZero() {
			return l.retry.Addr().String(), t, true
		}
	}
	return "", time.Time{}, false
}
