// Package console serves fieldgate's local web console: an overview of the
// gateway, live device values with a short history, a write form, the
// broker's clients, the recent log and the running configuration, each page
// also as JSON under /api/v1/. Assets are embedded; nothing is fetched from
// the internet.
//
// The console imports no other fieldgate package: it reads the gateway's
// state through the small interfaces below, which the gateway wires, and
// receives live values through Observe.
package console

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// StatusSource reports the gateway's state for the Overview page.
type StatusSource interface {
	Status() Status
}

// DeviceSource lists the devices with their counters and point metadata.
// Live values come from Observe, not from here.
type DeviceSource interface {
	Devices() []Device
}

// ClientSource lists the broker's connected network clients.
type ClientSource interface {
	Clients() []Client
}

// Writer writes value to a writable point through the gateway's write-back
// path (the one `<point topic>/set` uses: validation, write, read-back) and
// returns the confirmed value. The error is the device's answer in words.
type Writer interface {
	Write(ctx context.Context, device, point, value string) (confirmed any, err error)
}

// ConfigSource returns the running configuration, secrets already
// redacted, and the result of the last reload.
type ConfigSource interface {
	RunningConfig() RunningConfig
}

// Options wires a Console. Every source may be nil: its page then says so.
type Options struct {
	Status  StatusSource
	Devices DeviceSource
	Clients ClientSource
	Writer  Writer
	Config  ConfigSource
	// Log is the ring the process logger feeds (see NewLogRing); nil
	// leaves the Log page empty.
	Log *LogRing
	// Addr is the address the console is served on (host:port, as
	// configured); a login is required unless its host is loopback.
	Addr string
	// Logger receives the console's own logs (failed logins…). Required.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Console is the web console. Build it with New; serve Handler on the ops
// server, or Run on a listener of its own. Safe for concurrent use.
type Console struct {
	cfg        Config
	opts       Options
	log        *slog.Logger
	now        func() time.Time
	needLogin  bool
	pages      *pages
	sessions   *sessions
	limiter    *loginLimiter
	users      map[string]User
	dummyHash  []byte
	points     *pointTable
	hub        *hub
	writeSlots chan struct{}
	stopOnce   sync.Once
	stopping   chan struct{}
}

// maxViewers bounds the live-update streams open at once.
const maxViewers = 16

// New builds a Console from cfg (after Defaults and Validate). It starts
// nothing.
func New(cfg Config, opts Options) (*Console, error) {
	if opts.Logger == nil {
		return nil, errors.New("console: Options.Logger is required")
	}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Console{
		cfg:        cfg,
		opts:       opts,
		log:        opts.Logger.With("component", "console"),
		now:        opts.Now,
		needLogin:  !IsLoopback(opts.Addr),
		sessions:   newSessions(cfg.SessionTTL),
		limiter:    newLoginLimiter(),
		users:      map[string]User{},
		points:     newPointTable(cfg.History),
		hub:        newHub(maxViewers),
		writeSlots: make(chan struct{}, 4),
		stopping:   make(chan struct{}),
	}
	if c.now == nil {
		c.now = time.Now
	}
	for _, u := range cfg.Users {
		c.users[u.Username] = u
	}
	c.dummyHash = dummyHash
	if opts.Log != nil { // the Log page's live tail
		tail := c.hub.logLine
		opts.Log.sink.Store(&tail)
	}
	p, err := loadPages()
	if err != nil {
		return nil, err
	}
	c.pages = p
	return c, nil
}

// NeedsLogin reports whether pages and API require a login (the console is
// not on a loopback address).
func (c *Console) NeedsLogin() bool { return c.needLogin }

// Shutdown ends the live-update streams, so that an http.Server's
// Shutdown does not wait for them. Register it with RegisterOnShutdown.
func (c *Console) Shutdown() {
	c.stopOnce.Do(func() { close(c.stopping) })
}

// IsLoopback reports whether addr (host:port or host) names only loopback
// addresses: 127.0.0.0/8, ::1 or localhost. An empty host (every address)
// is not loopback.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
