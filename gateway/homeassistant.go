package gateway

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/fieldgate/fieldgate/bridge"
	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/devices"
	"github.com/fieldgate/fieldgate/integrations/homeassistant"
)

// originHomeAssistant names the discovery publisher on the local broker.
const originHomeAssistant = "homeassistant"

// IntegrationsConfig is the `integrations:` section: consumers of the device
// map that the gateway feeds. Each integration is off while its key is
// absent.
type IntegrationsConfig struct {
	HomeAssistant *homeassistant.Config `yaml:"homeassistant"`
}

func (c *IntegrationsConfig) defaults() {
	if c.HomeAssistant != nil {
		c.HomeAssistant.Defaults()
	}
}

// haEnabled reports whether Home Assistant discovery runs with cfg.
func haEnabled(cfg *Config) bool {
	return cfg.Integrations.HomeAssistant != nil && cfg.Integrations.HomeAssistant.On()
}

// integrationProblems validates the integrations' keys and, for Home
// Assistant, builds the discovery plan against the device map and the
// bridge's routes, so `fieldgate check` reports a discovery target that no
// route carries.
func (c *Config) integrationProblems(drivers map[string]devices.Driver) []Problem {
	ha := c.Integrations.HomeAssistant
	if ha == nil {
		return nil
	}
	probs := fieldProblems("", ha.Validate())
	if len(probs) > 0 || !ha.On() {
		return probs
	}
	if ha.Broker == homeassistant.BrokerUpstream && c.Bridge == nil {
		return append(probs, Problem{Path: "integrations.homeassistant.broker", Msg: "upstream: there is no bridge section, so nothing reaches an upstream broker"})
	}
	set, err := devices.New(c.Devices, devices.Options{Gateway: c.Gateway.ID, Drivers: drivers, Publisher: nopPublisher{}})
	if err != nil {
		return probs // the devices section's own problems are reported there
	}
	if _, err := haPlan(c, set.Devices(), ""); err != nil {
		probs = append(probs, fieldProblems("", err)...)
	}
	return probs
}

// haPlan compiles the discovery messages of cfg for the compiled devices;
// version goes to origin.sw_version and the gateway device's sw_version.
func haPlan(cfg *Config, devs []*devices.Device, version string) (*homeassistant.Plan, error) {
	ha := *cfg.Integrations.HomeAssistant
	opts := homeassistant.Options{Gateway: cfg.Gateway.ID, Version: version}
	if ha.Broker == homeassistant.BrokerUpstream && cfg.Bridge != nil {
		opts.Topics = upstreamTopics{cfg: cfg.Bridge, gw: cfg.Gateway.ID}
		opts.Availability = strings.ReplaceAll(cfg.Bridge.Upstream.StatusTopic, "{gateway}", cfg.Gateway.ID)
	} else {
		opts.Availability = strings.ReplaceAll(ha.AvailabilityTopic, "{gateway}", cfg.Gateway.ID)
	}
	return homeassistant.Build(ha, devs, opts)
}

// upstreamTopics names local topics as the upstream broker sees them,
// through the bridge's forward and subscribe routes.
type upstreamTopics struct {
	cfg *bridge.Config
	gw  string
}

func (u upstreamTopics) State(local string) (string, bool) { return u.cfg.UpstreamTopic(u.gw, local) }
func (u upstreamTopics) Command(local string) (string, bool) {
	return u.cfg.SubscribeSource(u.gw, local)
}
func (u upstreamTopics) Publish(remote string) (string, bool) {
	return u.cfg.ForwardSource(u.gw, remote)
}
func (u upstreamTopics) Receive(remote string) (string, bool) { return u.cfg.LocalTopic(u.gw, remote) }

// SetVersion names the running fieldgate version (Home Assistant's
// origin.sw_version and the gateway device's sw_version). Call it before
// Run; without it the module version of the build is used, if any.
func (g *Gateway) SetVersion(v string) { g.version = v }

// versionOr is the version set with SetVersion, else the module version
// the binary was built from, else "".
func (g *Gateway) versionOr() string {
	if g.version != "" {
		return g.version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return ""
}

// newHARunner builds the discovery runner for cfg and devs, or returns nil
// when discovery is off.
func (g *Gateway) newHARunner(cfg *Config, devs []*devices.Device, b *broker.Broker) (*homeassistant.Runner, error) {
	if !haEnabled(cfg) {
		return nil, nil
	}
	plan, err := haPlan(cfg, devs, g.versionOr())
	if err != nil {
		return nil, fmt.Errorf("integrations.homeassistant: %w", err)
	}
	return homeassistant.NewRunner(plan, homeassistant.RunOptions{
		Publisher:  haPublisher{b},
		Subscriber: deviceSubscriber{b},
		StateFile:  filepath.Join(cfg.Gateway.DataDir, "homeassistant.json"),
		Logger:     g.log.With("component", "homeassistant"),
	})
}

// haPublisher publishes discovery and availability messages on the local
// broker, through the same ingress as any publish (so forward routes carry
// them upstream, durably for QoS ≥ 1).
type haPublisher struct{ b *broker.Broker }

func (p haPublisher) Publish(ctx context.Context, m devices.Message) error {
	return p.b.Publish(ctx, broker.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Origin: originHomeAssistant})
}

// nopPublisher lets `check` compile the devices without a broker.
type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, devices.Message) error { return nil }

// haRun runs one Home Assistant discovery runner for the gateway's lifetime.
type haRun struct {
	r      *homeassistant.Runner
	cancel context.CancelFunc
	done   chan struct{}
}

func startHA(r *homeassistant.Runner, failed chan<- *ComponentError) *haRun {
	ctx, cancel := context.WithCancel(context.Background())
	h := &haRun{r: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		if err := r.Run(ctx); err != nil && ctx.Err() == nil {
			report(failed, "homeassistant", err) // Gateway.Run logs it
		}
	}()
	return h
}

// stop cancels the runner (it publishes the gateway's "offline") and
// returns a channel closed once it returned; nil when there is no runner.
func (h *haRun) stop() <-chan struct{} {
	if h == nil {
		return nil
	}
	h.cancel()
	return h.done
}

// prepareHA builds what a reload changes in discovery: apply hands the new
// plan to the runner (a no-op without one); restart reports that discovery
// was enabled or disabled, which needs a restart. The plan is compiled from
// next's device map, so a change of Home Assistant keys alone (names,
// classes, icons) needs no new pollers.
func (g *Gateway) prepareHA(next *Config) (apply func(), restart bool, err error) {
	g.mu.Lock()
	h, cur := g.ha, g.cfg
	g.mu.Unlock()
	nothing := func() {}
	if haEnabled(cur) != haEnabled(next) {
		return nothing, true, nil
	}
	if h == nil {
		return nothing, false, nil
	}
	set, err := devices.New(next.Devices, devices.Options{Gateway: next.Gateway.ID, Drivers: g.drivers, Publisher: nopPublisher{}})
	if err != nil {
		return nil, false, fmt.Errorf("devices: %w", err)
	}
	plan, err := haPlan(next, set.Devices(), g.versionOr())
	if err != nil {
		return nil, false, fmt.Errorf("integrations.homeassistant: %w", err)
	}
	return func() { h.r.Update(plan) }, false, nil
}

// pollerView returns cfgs without the keys only integrations read
// (manufacturer, model, homeassistant), so that a reload that changes only
// those keeps the pollers running.
func pollerView(cfgs []devices.DeviceConfig) []devices.DeviceConfig {
	out := make([]devices.DeviceConfig, len(cfgs))
	for i, c := range cfgs {
		c.Manufacturer, c.Model, c.HomeAssistant = "", "", nil
		c.Points = slices.Clone(c.Points)
		for j := range c.Points {
			c.Points[j].HomeAssistant = nil
		}
		out[i] = c
	}
	return out
}

// startHA starts discovery when cfg enables it.
func (g *Gateway) startHA(cfg *Config, devs []*devices.Device, b *broker.Broker, failed chan<- *ComponentError) error {
	r, err := g.newHARunner(cfg, devs, b)
	if err != nil || r == nil {
		return err
	}
	h := startHA(r, failed)
	g.mu.Lock()
	g.ha = h
	g.mu.Unlock()
	return nil
}

// stopHA stops discovery; the returned channel is nil without it.
func (g *Gateway) stopHA() <-chan struct{} {
	g.mu.Lock()
	h := g.ha
	g.mu.Unlock()
	return h.stop()
}
