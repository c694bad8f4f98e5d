// Package gateway owns the configuration file, wires the broker, the device
// pollers, the store-and-forward bridge and the ops HTTP endpoint together,
// and runs them with an ordered start and stop.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/console"
	"github.com/fieldgate/fieldgate/devices"
	"github.com/fieldgate/fieldgate/devices/modbus"
	"github.com/fieldgate/fieldgate/devices/serial"
	"github.com/fieldgate/fieldgate/devices/sim"

	"github.com/fieldgate/fieldgate/internal/durable"
)

// Origins of in-process publishers on the local broker.
const originDevices = "devices"

// Drivers returns the table of device drivers, keyed by the `driver:` value.
func Drivers(log *slog.Logger) map[string]devices.Driver {
	return map[string]devices.Driver{
		"modbus": modbus.New(log.With("component", "modbus")),
		"serial": serial.New(log.With("component", "serial")),
		"sim":    sim.New(),
	}
}

// Gateway is one configured gateway process. New builds it from a loaded
// Config; Run starts everything and blocks until the context is cancelled
// and everything has stopped. A Gateway is run once.
type Gateway struct {
	cfg     *Config
	log     *slog.Logger
	drivers map[string]devices.Driver

	version string // see SetVersion

	reloadMu sync.Mutex // serialises reloads, and reloads with the stop
	clock    clockWatch
	cw       consoleWiring
	build    BuildInfo // set by SetBuild before Run

	mu     sync.Mutex
	ready  bool
	broker *broker.Broker
	queue  *buffer.Queue
	bridge *bridge.Bridge
	devs   *devices.Set
	devRun *devRunner
	ha     *haRun // nil without Home Assistant discovery
	http   *opsServer
}

// ComponentError is what Run returns when a component (broker, bridge,
// buffer, devices, homeassistant, http) failed while the gateway was running: the gateway
// logged it when it happened ("component failed; stopping"), stopped
// everything and returns it so that the process exits non-zero (see
// cmd/fieldgate: exit code 4) and systemd restarts it.
type ComponentError struct {
	Component string
	Err       error
}

// Error names the component once: the packages prefix their own errors
// ("broker: …"), and the log must not read "broker: broker: …".
func (e *ComponentError) Error() string { return prefixed(e.Component, e.Err).Error() }
func (e *ComponentError) Unwrap() error { return e.Err }

// errStoppedEarly is the failure of a component whose Run returned nil
// before it was asked to stop.
var errStoppedEarly = errors.New("stopped on its own while the gateway was running")

// report sends a component's failure to failed, unless the gateway is
// already stopping for another one.
func report(failed chan<- *ComponentError, name string, err error) {
	select {
	case failed <- &ComponentError{Component: name, Err: err}:
	default:
	}
}

// devRunner runs one devices.Set at a time; a reload swaps it without
// touching the broker or the bridge.
type devRunner struct {
	failed chan<- *ComponentError
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *devRunner) start(set *devices.Set) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.mu.Lock()
	r.cancel, r.done = cancel, done
	r.mu.Unlock()
	go func() {
		defer close(done)
		// A set without devices returns nil at once: only an error is a
		// failure.
		if err := set.Run(ctx); err != nil && ctx.Err() == nil {
			report(r.failed, "devices", err)
		}
	}()
}

// stop cancels the running set and returns a channel closed once it has
// stopped.
func (r *devRunner) stop() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
	return r.done
}

// New checks that cfg can be wired. It starts nothing and opens nothing.
func New(cfg *Config, drivers map[string]devices.Driver, log *slog.Logger) (*Gateway, error) {
	if cfg == nil {
		return nil, errors.New("gateway: nil config")
	}
	g := &Gateway{cfg: cfg, log: log, drivers: drivers}
	if g.cw.ring = ringOf(log); g.cw.ring == nil { // a logger not made by NewLogger
		g.cw.ring = console.NewLogRing(logRingSize)
		g.log = slog.New(g.cw.ring.Handler(log.Handler()))
	}
	return g, nil
}

// Ready reports whether the listeners are bound and accepting and the store
// is open.
func (g *Gateway) Ready() bool {
	g.mu.Lock()
	ready, b, q := g.ready, g.broker, g.queue
	g.mu.Unlock()
	if !ready || b == nil {
		return false
	}
	if q != nil && q.Unwritable() != nil {
		return false
	}
	_, _, down := b.ListenerDown()
	return !down
}

// Run opens the data directory and the buffer, starts the broker, the
// bridge, the devices and the ops endpoint, notifies systemd once ready, and
// blocks until ctx is done. Shutdown is ordered: devices stop first, then
// the broker (in-flight publishes finish and are durable), then the bridge,
// then the buffer is flushed and closed, all within
// gateway.shutdown_timeout.
func (g *Gateway) Run(ctx context.Context) (err error) {
	cfg := g.cfg
	tuneRuntime(int64(*cfg.Gateway.MemoryLimit), os.Getenv)
	dataDir := cfg.Gateway.DataDir
	if err := durable.MkdirAll(dataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	unlock, err := lockDir(dataDir)
	if err != nil {
		return err
	}
	defer unlock()

	var q *buffer.Queue
	var br *bridge.Bridge
	if cfg.Bridge != nil {
		q, err = buffer.Open(filepath.Join(dataDir, "buffer"), cfg.Bridge.Buffer, g.log)
		if err != nil {
			return fmt.Errorf("open buffer: %w", err)
		}
		defer func() {
			if cerr := q.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close buffer: %w", cerr)
			}
		}()
	}

	b, err := broker.New(cfg.Broker, broker.Options{
		Version: g.build.Version,
		DataDir: dataDir,
		Logger:  g.log,
		Ingress: func(m *broker.Message) (broker.Stored, error) { return g.ingress(br, m) },
	})
	if err != nil {
		return prefixed("broker", err)
	}
	if cfg.Bridge != nil {
		br, err = bridge.New(*cfg.Bridge, bridge.Options{
			Gateway: cfg.Gateway.ID,
			Queue:   q,
			Local:   bridgeLocal{b},
			Logger:  g.log,
			DataDir: filepath.Join(dataDir, "bridge"),
		})
		if err != nil {
			return prefixed("bridge", err)
		}
	}
	g.clock.check(g.log)
	devs, err := g.newDevices(cfg, b)
	if err != nil {
		return err
	}
	b.SetOwnedTopics(devs.OwnedTopics())
	g.mu.Lock()
	g.broker, g.queue, g.bridge, g.devs = b, q, br, devs
	g.mu.Unlock()

	if err := g.newConsole(cfg); err != nil {
		return err
	}
	var conDone <-chan struct{}
	if g.cw.ln != nil {
		defer func() {
			if conDone == nil { // never served: close its listener here
				g.cw.ln.Close()
			}
		}()
	}
	var ops *opsServer
	var opsDone <-chan struct{}
	if cfg.Gateway.HTTP.Address != "off" {
		ops, err = newOpsServer(cfg.Gateway.HTTP.Address, g)
		if err != nil {
			return err
		}
		defer func() {
			if opsDone == nil { // never served: close its listener here
				ops.ln.Close()
			}
		}()
		g.mu.Lock()
		g.http = ops
		g.mu.Unlock()
	}

	// Each stage gets its own context so shutdown runs in order.
	var (
		brokerCtx, stopBroker = context.WithCancel(context.Background())
		bridgeCtx, stopBridge = context.WithCancel(context.Background())
		opsCtx, stopOps       = context.WithCancel(context.Background())
	)
	defer stopBroker()
	defer stopBridge()
	defer stopOps()

	// A component that returns before its stage is stopped failed, with
	// its error or errStoppedEarly.
	failed := make(chan *ComponentError, 1)
	start := func(name string, run func(context.Context) error, ctx context.Context) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := run(ctx); ctx.Err() == nil {
				report(failed, name, cmp.Or(err, errStoppedEarly))
			}
		}()
		return done
	}

	brokerDone := start("broker", b.Run, brokerCtx)
	select {
	case <-b.Ready():
	case ce := <-failed:
		stopBroker()
		<-brokerDone
		return ce.Err // not started yet: a start-up failure, not a component failure
	case <-ctx.Done():
		stopBroker()
		<-brokerDone
		return nil
	}
	var bridgeDone, queueDone <-chan struct{}
	if br != nil {
		bridgeDone = start("bridge", br.Run, bridgeCtx)
		queueDone = start("buffer", q.Run, bridgeCtx)
	}
	g.devRun = &devRunner{failed: failed}
	g.watchPoints(devs)
	g.devRun.start(devs)
	if err := g.startHA(cfg, devs.Devices(), b, failed); err != nil {
		report(failed, "homeassistant", err)
	}
	if ops != nil {
		opsDone = start("http", ops.Run, opsCtx)
	}
	if g.cw.ln != nil {
		conDone = start("console", func(ctx context.Context) error { return g.cw.con.Run(ctx, g.cw.ln) }, opsCtx)
	}

	g.mu.Lock()
	g.ready = true
	g.mu.Unlock()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		g.log.Warn("systemd notify failed", "err", err)
	}
	for _, w := range Warnings(cfg) {
		g.log.Warn(w)
	}
	g.log.Info("fieldgate ready", "id", cfg.Gateway.ID, "listeners", addrStrings(b), "devices", len(cfg.Devices), "bridge", br != nil)
	watchdogDone := make(chan struct{})
	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	go func() {
		defer close(watchdogDone)
		var wg sync.WaitGroup
		wg.Go(func() { g.clock.run(wdCtx, g.log) })
		g.watchdog(wdCtx)
		wg.Wait()
	}()

	var failure *ComponentError
	select {
	case <-ctx.Done():
	case failure = <-failed:
	}
	// Not ready, no more watchdog pings, then the ordered stop.
	g.mu.Lock()
	g.ready = false
	g.mu.Unlock()
	stopWatchdog()
	var runErr error
	if failure != nil {
		g.log.Error("component failed; stopping", "component", failure.Component, "err", failure.Err)
		runErr = failure
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	<-watchdogDone
	// Reload and stop exclude each other: a reload under way finishes
	// (its device set is the one stopped below) and later ones find the
	// gateway not ready and change nothing.
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()

	deadline := time.NewTimer(cfg.Gateway.ShutdownTimeout)
	defer deadline.Stop()
	wait := func(name string, stop context.CancelFunc, done <-chan struct{}) {
		if done == nil {
			return
		}
		if stop != nil {
			stop()
		}
		select {
		case <-done:
		case <-deadline.C:
			g.log.Error("shutdown timeout", "waiting_for", name)
			runErr = errors.Join(runErr, fmt.Errorf("shutdown: %s did not stop within %s", name, cfg.Gateway.ShutdownTimeout))
			deadline.Reset(time.Second) // give the remaining stages a moment each
		}
	}
	wait("homeassistant", nil, g.stopHA())
	wait("devices", nil, g.devRun.stop())
	wait("broker", stopBroker, brokerDone)
	wait("bridge", stopBridge, bridgeDone)
	wait("buffer", stopBridge, queueDone)
	wait("http", stopOps, opsDone)
	wait("console", stopOps, conDone)
	g.log.Info("fieldgate stopped")
	return runErr
}

func (g *Gateway) newDevices(cfg *Config, b *broker.Broker) (*devices.Set, error) {
	var synced func() bool
	if *cfg.Gateway.MarkUnsyncedReadings {
		synced = g.clock.synced.Load
	}
	set, err := devices.New(cfg.Devices, devices.Options{
		Gateway:     cfg.Gateway.ID,
		Drivers:     g.drivers,
		Publisher:   observedPublisher{devicePublisher{b}, &g.cw},
		Subscriber:  deviceSubscriber{b},
		Logger:      g.log.With("component", "devices"),
		ClockSynced: synced,
	})
	if err != nil {
		return nil, prefixed("devices", err)
	}
	return set, nil
}

// ingress is the broker's store-and-forward hook: every local publish passes
// here before its publisher is acknowledged (G1). It queues the message for
// the next group commit; the broker acknowledges once it is durable.
func (g *Gateway) ingress(br *bridge.Bridge, m *broker.Message) (broker.Stored, error) {
	if br == nil {
		return nil, nil
	}
	in, err := br.IngestAsync(toBridge(m))
	if err != nil {
		return nil, ingressErr(err)
	}
	if in == nil {
		return nil, nil
	}
	return stored{in}, nil
}

// stored adapts a bridge.Ingestion to the broker, mapping its error.
type stored struct{ *bridge.Ingestion }

func (s stored) Err() error { return ingressErr(s.Ingestion.Err()) }

// ingressErr maps a full buffer or disk to the broker's quota error.
func ingressErr(err error) error {
	if errors.Is(err, buffer.ErrFull) || errors.Is(err, buffer.ErrDiskFull) || errors.Is(err, buffer.ErrUnwritable) {
		return broker.ErrQuotaExceeded // MQTT 5: 0x97; 3.1.1: closed without an ack
	}
	return err
}

// watchdog pings systemd's watchdog only while the gateway makes progress:
// the broker answers and the store accepts reads.
func (g *Gateway) watchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if g.healthy() {
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
		}
	}
}

// listenerDownLimit is how long a broker listener may fail to accept
// connections (say, out of file descriptors) before the watchdog stops
// being fed; readiness fails at once.
const listenerDownLimit = time.Minute

// healthy checks that the main loops respond and that the broker's
// listeners accept connections.
func (g *Gateway) healthy() bool {
	g.mu.Lock()
	b, q := g.broker, g.queue
	g.mu.Unlock()
	if b == nil {
		return false
	}
	if _, since, down := b.ListenerDown(); down && time.Since(since) > listenerDownLimit {
		return false // systemd restarts a gateway nobody can connect to
	}
	_ = b.Stats()
	if q != nil {
		if _, err := q.Read(^uint64(0)-1, 1, 1); err != nil {
			return false
		}
	}
	return true
}

func addrStrings(b *broker.Broker) []string {
	var s []string
	for _, a := range b.Addrs() {
		s = append(s, a.String())
	}
	return s
}

// lockDir takes an exclusive lock on dir so that two gateways never share a
// data directory.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := lockHolder(f)
		f.Close()
		return nil, fmt.Errorf("data_dir %s is in use by another fieldgate process%s: %w", dir, holder, err)
	}
	return func() { f.Close() }, nil
}
