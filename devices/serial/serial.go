// Package serial is a devices.Driver for line-oriented sensors on a serial
// port: a sensor that prints "T=21.5 H=40" (or a JSON object, or a=1 b=2)
// per line, either on its own (streaming) or in answer to a `request:`
// sent every poll.
//
// Lines are framed at `terminator:` (default "\n"; a trailing "\r" is
// trimmed), bounded by `max_line_length:` (default 1024 bytes), and parsed
// with `parse: {regex|json|kv}`. Lines that are empty, over-long, not
// UTF-8, contain control characters, are cut short (no terminator before
// the port closed or went quiet for `timeout:`), or do not match the parser
// are counted per reason (Driver.Stats) and skipped, never published.
//
// The port is found with devices.ResolvePort every time the device is
// (re)opened, so an adapter that is unplugged and comes back, possibly as
// another /dev/ttyUSBn, is picked up again. The driver is read-only.
package serial

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.bug.st/serial"

	"github.com/fieldgate/fieldgate/devices"
)

// Driver opens serial line sensors. It is safe for concurrent use.
type Driver struct {
	log   *slog.Logger
	mu    sync.Mutex
	stats map[string]*counters // by device name; kept across reopens
}

// New returns a serial driver that logs to log (nil discards); the caller
// scopes it (component=serial).
func New(log *slog.Logger) *Driver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{log: log, stats: map[string]*counters{}}
}

// SupportsWrite reports that serial line sensors are read-only.
func (d *Driver) SupportsWrite() bool { return false }

// counters are the line statistics of one device.
type counters struct {
	lines       atomic.Uint64
	parsed      atomic.Uint64
	empty       atomic.Uint64
	noMatch     atomic.Uint64
	garbage     atomic.Uint64
	invalidUTF8 atomic.Uint64
	tooLong     atomic.Uint64
	partial     atomic.Uint64
	opens       atomic.Uint64
	openErrors  atomic.Uint64
	timeouts    atomic.Uint64
}

// LineStats counts what happened to the lines of one device. Counters are
// monotonic. Lines counts complete lines (within max_line_length); each is
// then Parsed or skipped for exactly one reason (Empty, InvalidUTF8,
// Garbage, NoMatch). TooLong and Partial count dropped fragments.
type LineStats struct {
	Lines       uint64
	Parsed      uint64
	Empty       uint64
	NoMatch     uint64
	Garbage     uint64 // control characters
	InvalidUTF8 uint64
	TooLong     uint64
	Partial     uint64
	Opens       uint64 // port opened
	OpenErrors  uint64 // port missing or failed to open
	Timeouts    uint64 // request/response: no parseable answer in time
}

// Stats returns the line statistics by device name.
func (d *Driver) Stats() map[string]LineStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]LineStats, len(d.stats))
	for name, c := range d.stats {
		out[name] = LineStats{
			Lines: c.lines.Load(), Parsed: c.parsed.Load(), Empty: c.empty.Load(),
			NoMatch: c.noMatch.Load(), Garbage: c.garbage.Load(), InvalidUTF8: c.invalidUTF8.Load(),
			TooLong: c.tooLong.Load(), Partial: c.partial.Load(), Opens: c.opens.Load(),
			OpenErrors: c.openErrors.Load(), Timeouts: c.timeouts.Load(),
		}
	}
	return out
}

func (d *Driver) counters(name string) *counters {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.stats[name]
	if c == nil {
		c = &counters{}
		d.stats[name] = c
	}
	return c
}

// Open returns a devices.StreamConn (no `request:`) or a devices.PollConn
// (with `request:`) for dev. It does not touch the port: the port is
// resolved and opened by Stream, or by the first Poll.
func (d *Driver) Open(dev *devices.Device) (devices.Conn, error) {
	p, err := newParser(dev)
	if err != nil {
		return nil, fmt.Errorf("serial device %s: %w", dev.Name(), err)
	}
	c := conn{dev: dev, parser: p, stats: d.counters(dev.Name()), log: d.log.With("device", dev.Name())}
	if dev.Config.Request == "" {
		return &streamConn{conn: c}, nil
	}
	return &pollConn{conn: c}, nil
}

// conn is what both kinds of connection share.
type conn struct {
	dev    *devices.Device
	parser *parser
	stats  *counters
	log    *slog.Logger

	// Lines skipped in a row since the last parsed one, and the last of
	// them (quoted); warned is set once the streak has been logged.
	skipped int
	last    string
	warned  bool
}

// warnAfter is how many lines in a row must fail to parse before it is
// logged at warn (once per streak).
const warnAfter = 3

// openPort resolves and opens the port with the device's line settings.
func (c *conn) openPort() (serial.Port, string, error) {
	cfg := &c.dev.Config
	path, err := devices.ResolvePort(cfg)
	if err != nil {
		c.stats.openErrors.Add(1)
		return nil, "", err
	}
	mode := &serial.Mode{BaudRate: cfg.Baud, DataBits: cfg.DataBits, Parity: serial.NoParity, StopBits: serial.OneStopBit}
	switch cfg.Parity {
	case "E":
		mode.Parity = serial.EvenParity
	case "O":
		mode.Parity = serial.OddParity
	}
	if cfg.StopBits == 2 {
		mode.StopBits = serial.TwoStopBits
	}
	port, err := serial.Open(path, mode)
	if err != nil {
		c.stats.openErrors.Add(1)
		return nil, "", fmt.Errorf("open %s: %w", path, err)
	}
	c.stats.opens.Add(1)
	return port, path, nil
}

// line handles one framed line: it returns the point values it carries, or
// nil after counting why it was skipped.
func (c *conn) line(b []byte) map[*devices.Point]any {
	c.stats.lines.Add(1)
	s, err := cleanLine(b)
	if err == nil {
		var vals map[*devices.Point]any
		if vals, err = c.parser.parse(s); err == nil {
			c.stats.parsed.Add(1)
			if c.warned {
				c.log.Info("lines match the parser again", "skipped", c.skipped)
			}
			c.skipped, c.warned = 0, false
			return vals
		}
	}
	c.skipped++
	c.last = quoteLine(bytes.TrimRight(b, "\r"))
	if c.skipped >= warnAfter && !c.warned {
		c.warned = true
		c.log.Warn(c.noMatch())
	}
	switch err {
	case errEmpty:
		c.stats.empty.Add(1)
	case errInvalidUTF8:
		c.stats.invalidUTF8.Add(1)
	case errGarbage:
		c.stats.garbage.Add(1)
	default:
		c.stats.noMatch.Add(1)
	}
	c.log.Debug("line skipped", "reason", err, "line", c.last)
	return nil
}

// noMatch describes the current streak of skipped lines.
func (c *conn) noMatch() string {
	return fmt.Sprintf("%d lines received, none matched (last: %s): %s", c.skipped, c.last, c.parser.hint())
}

func (c *conn) framer() *framer {
	return newFramer(c.dev.Config.Terminator, c.dev.Config.MaxLineLength, c.stats)
}

// streamConn is a sensor that prints lines on its own.
type streamConn struct {
	conn
}

// Stream opens the port and emits the readings of every parsed line until
// ctx is done (nil, within about 100ms) or the port fails (unplugged: the
// error is returned and the devices core reopens with backoff, resolving
// the port again). A line that has not been terminated within the device's
// timeout of its last byte is dropped as partial.
func (s *streamConn) Stream(ctx context.Context, emit func([]devices.Reading)) error {
	port, path, err := s.openPort()
	if err != nil {
		return err
	}
	defer port.Close()
	// Reads wait in short slices so that a cancelled ctx is noticed
	// promptly without closing the port under a blocked Read.
	timeout := s.dev.Config.Timeout
	if err := port.SetReadTimeout(min(timeout, 100*time.Millisecond)); err != nil {
		return fmt.Errorf("%s: set read timeout: %w", path, err)
	}
	fr := s.framer()
	buf := make([]byte, 4096)
	lastByte := time.Now()
	for {
		n, err := port.Read(buf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fr.flush()
			return fmt.Errorf("read %s: %w", path, err)
		}
		now := time.Now()
		if n == 0 {
			if now.Sub(lastByte) >= timeout { // quiet mid-line for a whole timeout
				fr.flush()
			}
			continue
		}
		lastByte = now
		fr.feed(buf[:n], func(l []byte) {
			if vals := s.line(l); vals != nil {
				emit(sortedReadings(s.dev, vals, now))
			}
		})
	}
}

// sortedReadings returns one Reading per value, in point order.
func sortedReadings(dev *devices.Device, vals map[*devices.Point]any, at time.Time) []devices.Reading {
	out := make([]devices.Reading, 0, len(vals))
	for _, pt := range dev.Points {
		if v, ok := vals[pt]; ok {
			out = append(out, devices.Reading{Point: pt, Value: v, Time: at})
		}
	}
	return out
}

// pollConn is a sensor that answers `request:`.
type pollConn struct {
	conn
	mu   sync.Mutex
	port serial.Port // nil until opened; guarded by mu
	path string
}

// errTimeout is a request without a parseable answer.
var errTimeout = errors.New("no parseable answer")

// Poll sends the request (again after a timeout, `retries:` times) and
// returns the points found in the first line that parses; points absent
// from that line have Err set. Port errors close the port and are returned,
// so the device goes offline and is reopened (and the port resolved again).
func (p *pollConn) Poll(ctx context.Context, pts []*devices.Point) ([]devices.Reading, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.port == nil {
		port, path, err := p.openPort()
		if err != nil {
			return nil, err
		}
		p.port, p.path = port, path
	}
	cfg := &p.dev.Config
	attempts := 1 + max(0, *cfg.Retries)
	for range attempts {
		vals, at, err := p.ask(ctx)
		if errors.Is(err, errTimeout) {
			p.stats.timeouts.Add(1)
			continue
		}
		if err != nil {
			p.closePort()
			return nil, err
		}
		out := make([]devices.Reading, len(pts))
		for i, pt := range pts {
			out[i] = devices.Reading{Point: pt, Time: at}
			if v, ok := vals[pt]; ok {
				out[i].Value = v
			} else {
				out[i].Err = fmt.Errorf("point %s not in the answer", pt.Name())
			}
		}
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.skipped > 0 {
		return nil, fmt.Errorf("%s: no parseable answer to %q within %s (%d attempts): %s", p.path, cfg.Request, cfg.Timeout, attempts, p.noMatch())
	}
	return nil, fmt.Errorf("%s: no answer to %q within %s (%d attempts): check the wiring, baud and request", p.path, cfg.Request, cfg.Timeout, attempts)
}

// ask sends the request once and waits up to the timeout for a line that
// parses.
func (p *pollConn) ask(ctx context.Context) (map[*devices.Point]any, time.Time, error) {
	cfg := &p.dev.Config
	if err := p.port.ResetInputBuffer(); err != nil {
		return nil, time.Time{}, fmt.Errorf("%s: reset input: %w", p.path, err)
	}
	if _, err := p.port.Write([]byte(cfg.Request)); err != nil {
		return nil, time.Time{}, fmt.Errorf("write %s: %w", p.path, err)
	}
	fr := p.framer()
	deadline := time.Now().Add(cfg.Timeout)
	buf := make([]byte, 4096)
	var found map[*devices.Point]any
	for found == nil {
		if err := ctx.Err(); err != nil {
			return nil, time.Time{}, err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			fr.flush()
			return nil, time.Time{}, errTimeout
		}
		// Short slices keep Poll responsive to ctx.
		if err := p.port.SetReadTimeout(min(wait, 100*time.Millisecond)); err != nil {
			return nil, time.Time{}, fmt.Errorf("%s: set read timeout: %w", p.path, err)
		}
		n, err := p.port.Read(buf)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("read %s: %w", p.path, err)
		}
		fr.feed(buf[:n], func(l []byte) {
			if found != nil {
				return
			}
			found = p.line(l)
		})
	}
	return found, time.Now(), nil
}

func (p *pollConn) closePort() {
	if p.port != nil {
		p.port.Close()
		p.port = nil
	}
}

// Close closes the port if it is open.
func (p *pollConn) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closePort()
	return nil
}

// Close does nothing: Stream closes its port when it returns.
func (s *streamConn) Close() error { return nil }
