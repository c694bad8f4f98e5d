// Package sim is a devices.Driver that simulates points (sine, random walk,
// counter, constant, toggle), for demos and tests without hardware.
//
// A sim device is configured like any other (driver: sim); each point names
// its simulation with `sim:` and its parameters (min, max, period, value,
// step). Writable sim points hold the value written to them: from the write
// on, every poll returns it (so write-back can be demonstrated end to end).
package sim

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/devices"
)

// Driver opens sim devices. It is safe for concurrent use.
type Driver struct {
	now  func() time.Time
	seed uint64
}

// Option configures a Driver.
type Option func(*Driver)

// WithClock sets the clock that drives sine points and sample times
// (default time.Now).
func WithClock(now func() time.Time) Option { return func(d *Driver) { d.now = now } }

// WithSeed sets the seed of the random walks (default 0). Each point's
// generator is derived from the seed and the device and point names, so a
// run is reproducible.
func WithSeed(seed uint64) Option { return func(d *Driver) { d.seed = seed } }

// New returns a sim driver.
func New(opts ...Option) *Driver {
	d := &Driver{now: time.Now}
	for _, o := range opts {
		o(d)
	}
	return d
}

// SupportsWrite reports that sim points may be writable.
func (d *Driver) SupportsWrite() bool { return true }

// Open returns a Conn that simulates dev's points. It never fails for a
// validated config.
func (d *Driver) Open(dev *devices.Device) (devices.Conn, error) {
	c := &Conn{now: d.now, points: make([]*point, len(dev.Points))}
	for i, p := range dev.Points {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%s", dev.Name(), p.Name())
		c.points[i] = &point{cfg: p.Config, rng: rand.New(rand.NewPCG(d.seed, h.Sum64()))}
	}
	return c, nil
}

// Conn is an open sim device: a devices.PollConn and devices.WriteConn.
// Its state (counters, walks, toggles, written values) lives as long as the
// Conn. It is safe for concurrent use.
type Conn struct {
	now    func() time.Time
	mu     sync.Mutex
	points []*point
}

type point struct {
	cfg     devices.PointConfig
	rng     *rand.Rand
	started bool
	cur     float64
	on      bool
	written any
}

// Poll returns the next simulated value of each point.
func (c *Conn) Poll(ctx context.Context, pts []*devices.Point) ([]devices.Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	out := make([]devices.Reading, len(pts))
	for i, p := range pts {
		out[i] = devices.Reading{Point: p, Time: now}
		if p.Index < 0 || p.Index >= len(c.points) {
			out[i].Err = fmt.Errorf("point %s is not part of this device", p.Name())
			continue
		}
		out[i].Value = c.points[p.Index].next(now)
	}
	return out, nil
}

func (s *point) next(now time.Time) any {
	if s.written != nil {
		return s.written
	}
	cfg := &s.cfg
	first := !s.started
	s.started = true
	switch cfg.Sim {
	case "sine":
		lo, hi := val(cfg.Min), val(cfg.Max)
		period := cfg.Period.Nanoseconds()
		phase := float64(now.UnixNano()%period) / float64(period)
		return round2((lo+hi)/2 + (hi-lo)/2*math.Sin(2*math.Pi*phase))
	case "random":
		lo, hi := val(cfg.Min), val(cfg.Max)
		if first {
			s.cur = (lo + hi) / 2
			return s.cur
		}
		s.cur += (s.rng.Float64()*2 - 1) * val(cfg.Step)
		s.cur = min(max(s.cur, lo), hi)
		return round2(s.cur)
	case "counter":
		if first {
			s.cur = val(cfg.Value)
		} else {
			s.cur += val(cfg.Step)
		}
		return s.cur
	case "toggle":
		if first {
			s.on = val(cfg.Value) != 0
		} else {
			s.on = !s.on
		}
		return s.on
	}
	return val(cfg.Value) // constant
}

func val(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

// Write stores v as the point's value: polls return it from now on.
func (c *Conn) Write(ctx context.Context, p *devices.Point, v any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.Index < 0 || p.Index >= len(c.points) {
		return fmt.Errorf("point %s is not part of this device", p.Name())
	}
	var stored any
	switch x := v.(type) {
	case bool:
		if p.Config.Sim != "toggle" {
			return fmt.Errorf("point %s (sim %s) takes a number, not a bool", p.Name(), p.Config.Sim)
		}
		stored = x
	case float64:
		stored = x
	case int64:
		stored = float64(x)
	case uint64:
		stored = float64(x)
	default:
		return fmt.Errorf("point %s: cannot store a %T", p.Name(), v)
	}
	if _, isBool := stored.(bool); !isBool && p.Config.Sim == "toggle" {
		return fmt.Errorf("point %s (sim toggle) takes a bool", p.Name())
	}
	c.mu.Lock()
	c.points[p.Index].written = stored
	c.mu.Unlock()
	return nil
}

// Close releases nothing; it exists to satisfy devices.Conn.
func (c *Conn) Close() error { return nil }

// round2 rounds a simulated measurement to two decimals, as a real sensor's
// resolution would.
func round2(v float64) float64 { return math.Round(v*100) / 100 }
