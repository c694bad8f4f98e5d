package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options wires a Set to the rest of the gateway.
type Options struct {
	// Gateway is {gateway} in topic templates.
	Gateway string
	// Drivers maps the `driver:` config value to its Driver.
	Drivers map[string]Driver
	// Publisher receives readings, availability and write results. Required.
	Publisher Publisher
	// Subscriber delivers write requests (`<point topic>/set`); nil
	// disables write-back.
	Subscriber Subscriber
	// Logger, already scoped by the caller (component=devices); nil
	// discards logs. Device messages add device=<name>.
	Logger *slog.Logger
	// Now is the clock used for sample times that a driver left zero and
	// for heartbeats; nil means time.Now. Poll schedules always use the
	// time package's timers (fake under testing/synctest).
	Now func() time.Time
	// ClockSynced, when set, reports whether the system clock is
	// synchronised (a Pi has no RTC: until NTP syncs, its clock may be days
	// off). Readings sampled while it returns false are published with
	// "quality":"uncertain" instead of passing as good. It is called once
	// per poll and must be cheap (cache the check).
	ClockSynced func() bool
}

// Backoff bounds for reopening a failed device.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// writeQueue is how many write requests may wait per device.
const writeQueue = 16

// Set is the compiled set of devices and the pollers that run them. Build it
// with New, then call Run once. Stats and Devices are safe for concurrent
// use.
type Set struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	devices []*Device
	runners []*runner
	running atomic.Bool
}

// New validates cfgs (see Validate), applies defaults and compiles devices,
// points and topics. It starts nothing.
func New(cfgs []DeviceConfig, opts Options) (*Set, error) {
	if opts.Publisher == nil {
		return nil, errors.New("devices: Options.Publisher is required")
	}
	if err := Validate(cfgs, opts.Drivers); err != nil {
		return nil, err
	}
	s := &Set{opts: opts, log: opts.Logger, now: opts.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i := range cfgs {
		c := cfgs[i]
		c.Defaults()
		dev := &Device{Config: c}
		for j := range c.Points {
			dev.Points = append(dev.Points, &Point{Config: c.Points[j], Device: dev, Index: j})
		}
		r, err := s.compile(dev)
		if err != nil {
			return nil, fmt.Errorf("devices: device %s: %w", c.Name, err)
		}
		s.devices = append(s.devices, dev)
		s.runners = append(s.runners, r)
	}
	return s, nil
}

// compile expands the topics of dev with the real gateway id.
func (s *Set) compile(dev *Device) (*runner, error) {
	c := &dev.Config
	r := &runner{
		set:    s,
		dev:    dev,
		drv:    s.opts.Drivers[c.Driver],
		log:    s.log.With("device", c.Name),
		writes: make(chan writeReq, writeQueue),
	}
	tmpl, err := parseTemplate(c.Topic)
	if err != nil {
		return nil, fmt.Errorf("topic: %w", err)
	}
	root, ok := tmpl.expandRoot(c.lookup(s.opts.Gateway, ""))
	if !ok {
		return nil, fmt.Errorf("topic %q has no {point} level", c.Topic)
	}
	r.root = root
	r.availTopic = root + "/availability"
	if err := checkTopic(r.availTopic); err != nil {
		return nil, fmt.Errorf("availability topic: %w", err)
	}
	dev.AvailabilityTopic = r.availTopic
	polls := map[time.Duration][]*Point{}
	for _, p := range dev.Points {
		pt, err := parseTemplate(p.Config.Topic)
		if err != nil {
			return nil, fmt.Errorf("point %s: topic: %w", p.Name(), err)
		}
		topic := pt.expand(c.lookup(s.opts.Gateway, p.Name()))
		if err := checkTopic(topic); err != nil {
			return nil, fmt.Errorf("point %s: %w", p.Name(), err)
		}
		p.Topic = topic
		r.points = append(r.points, &pointState{
			p:      p,
			topic:  topic,
			qos:    byte(*p.Config.QoS),
			retain: *p.Config.Retain,
		})
		polls[p.Config.Poll] = append(polls[p.Config.Poll], p)
	}
	for _, every := range slices.Sorted(maps.Keys(polls)) {
		r.groups = append(r.groups, pollGroup{every: every, points: polls[every]})
	}
	// A port named by plug order (/dev/ttyUSBn) is a configuration
	// warning: the gateway logs it once at start and at reload.
	return r, nil
}

// Devices returns the compiled devices, in config order. They are immutable.
func (s *Set) Devices() []*Device { return slices.Clone(s.devices) }

// Run subscribes to the write topics of writable points, then runs one
// goroutine per device: open through its driver, poll on schedule (or
// stream), publish, serve writes, and reopen with backoff after failures.
// It returns nil once ctx is done and every goroutine has returned and
// every Conn is closed; it publishes "offline" for every device on the way
// out. Run may be called once.
func (s *Set) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("devices: Run called twice")
	}
	var unsubs []func()
	defer func() {
		for _, u := range unsubs {
			u()
		}
	}()
	if s.opts.Subscriber != nil {
		for _, r := range s.runners {
			// Every point answers on /set/result, a read-only one with
			// an error; so does a name under the device's topic root
			// that is no point.
			for _, ps := range r.points {
				u, err := s.opts.Subscriber.Subscribe(ps.topic+"/set", func(m Message) { r.enqueueWrite(ps, m) })
				if err != nil {
					return fmt.Errorf("devices: subscribe %s/set: %w", ps.topic, err)
				}
				unsubs = append(unsubs, u)
			}
			u, err := s.opts.Subscriber.Subscribe(r.root+"/+/set", r.enqueueUnknown)
			if err != nil {
				return fmt.Errorf("devices: subscribe %s/+/set: %w", r.root, err)
			}
			unsubs = append(unsubs, u)
		}
	}
	var wg sync.WaitGroup
	for _, r := range s.runners {
		wg.Go(func() { r.run(ctx) })
	}
	wg.Wait()
	return nil
}

// Stats is a snapshot of the Set's counters. Counters are monotonic.
type Stats struct {
	Polls         uint64 // Poll calls that returned (success or failure)
	PollErrors    uint64 // polls that failed as a whole
	ReadErrors    uint64 // single points that could not be read
	Published     uint64 // messages published (values, availability, results)
	PublishErrors uint64
	Writes        uint64 // write requests received
	WriteErrors   uint64 // write requests answered with ok:false
	WritesDropped uint64 // write requests dropped because the device queue was full
	Implausible   uint64 // readings outside their point's valid range
	Reconnects    uint64 // device reopen attempts after a failure
	Online        int    // devices online now
	Devices       []DeviceStats
}

// DeviceStats is the per-device part of Stats.
type DeviceStats struct {
	Name          string
	Driver        string
	Online        bool
	Polls         uint64
	PollErrors    uint64
	ReadErrors    uint64
	Published     uint64
	PublishErrors uint64
	Writes        uint64
	WriteErrors   uint64
	WritesDropped uint64
	Implausible   uint64
	Reconnects    uint64
	LastSample    time.Time // sample time of the last published value; zero if none
}

// Stats returns a snapshot of the counters.
func (s *Set) Stats() Stats {
	var st Stats
	for _, r := range s.runners {
		d := DeviceStats{
			Name:          r.dev.Name(),
			Driver:        r.dev.Config.Driver,
			Online:        r.stats.online.Load(),
			Polls:         r.stats.polls.Load(),
			PollErrors:    r.stats.pollErrors.Load(),
			ReadErrors:    r.stats.readErrors.Load(),
			Published:     r.stats.published.Load(),
			PublishErrors: r.stats.publishErrors.Load(),
			Writes:        r.stats.writes.Load(),
			WriteErrors:   r.stats.writeErrors.Load(),
			WritesDropped: r.stats.writesDropped.Load(),
			Implausible:   r.stats.implausible.Load(),
			Reconnects:    r.stats.reconnects.Load(),
		}
		if ns := r.stats.lastSample.Load(); ns != 0 {
			d.LastSample = time.Unix(0, ns).UTC()
		}
		st.Polls += d.Polls
		st.PollErrors += d.PollErrors
		st.ReadErrors += d.ReadErrors
		st.Published += d.Published
		st.PublishErrors += d.PublishErrors
		st.Writes += d.Writes
		st.WriteErrors += d.WriteErrors
		st.WritesDropped += d.WritesDropped
		st.Implausible += d.Implausible
		st.Reconnects += d.Reconnects
		if d.Online {
			st.Online++
		}
		st.Devices = append(st.Devices, d)
	}
	return st
}
