// Package modbus is the Modbus RTU and Modbus TCP driver of the devices
// package.
//
// Every serial port (and every TCP endpoint) is a bus with ONE owner
// goroutine that performs all requests on it in turn, so requests of the
// devices (unit ids) that share it never interleave. A bus exists while at
// least one Conn on it is open: Driver.Open starts its owner, the last
// Conn.Close stops it and waits for it.
//
// Errors: a Modbus exception response is an ExceptionError on the points of
// that request (the link is fine); a missing response is ErrTimeout, retried
// `retries` times, after which the unit is backed off (its requests fail fast
// with ErrUnitBackoff) so that a dead unit cannot stall the others on the
// bus; an I/O error closes the port or connection, which is re-resolved
// (devices.ResolvePort) and reopened on a later request, with backoff.
package modbus

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/devices"
)

// ErrTimeout means the device did not answer within the request timeout.
var ErrTimeout = errors.New("modbus: no response")

// ErrUnitBackoff means the unit did not answer recently and is not asked
// again until its backoff expires (so a dead unit does not stall the bus).
var ErrUnitBackoff = errors.New("modbus: unit not answering, backing off")

// ErrPortBackoff means the port or connection failed and is reopened only
// after its backoff expires.
var ErrPortBackoff = errors.New("modbus: port unavailable, backing off")

// ExceptionError is a Modbus exception response. It affects the points of
// one request; the link is healthy, so it never causes a reconnect.
type ExceptionError struct {
	Function byte // function code of the request (without the 0x80 flag)
	Code     byte // exception code: 1 illegal function, 2 illegal data address, …
}

func (e ExceptionError) Error() string {
	names := map[byte]string{
		1: "illegal function", 2: "illegal data address", 3: "illegal data value",
		4: "server device failure", 5: "acknowledge", 6: "server device busy",
		8: "memory parity error", 10: "gateway path unavailable",
		11: "gateway target device failed to respond",
	}
	name, ok := names[e.Code]
	if !ok {
		name = "unknown exception"
	}
	return fmt.Sprintf("modbus exception %d (%s)", e.Code, name)
}

// Stats is a snapshot of the driver's counters (monotonic) and gauges.
type Stats struct {
	Requests    uint64 // transactions attempted (each retry counts)
	Responses   uint64 // valid responses, exceptions included
	Exceptions  uint64 // exception responses
	Timeouts    uint64 // requests without a response in time
	FrameErrors uint64 // CRC errors, garbage, truncated or mismatched frames
	PortErrors  uint64 // I/O errors that closed a port or connection
	Opens       uint64 // successful port opens / TCP connects
	Backoffs    uint64 // requests failed fast because a unit or port was backing off
	Buses       int    // buses (ports, TCP endpoints) open now
}

type counters struct {
	requests, responses, exceptions, timeouts, frameErrors, portErrors, opens, backoffs atomic.Uint64
}

// Driver opens Modbus devices. It is safe for concurrent use. New starts
// nothing; buses start with the first Open on them and stop with the last
// Close.
type Driver struct {
	log *slog.Logger
	c   counters

	// Backoff after a unit stops answering, and after a port fails to open
	// (doubling per failure up to the max). Tests shorten them.
	unitBackoff, unitBackoffMax time.Duration
	portBackoff, portBackoffMax time.Duration

	mu    sync.Mutex
	buses map[string]*bus
}

// New returns a Driver that logs to log (which the caller scopes, e.g.
// with component=modbus). Log lines carry the bus and unit; they are written
// on state changes (port lost, unit not answering, back again), not per poll.
func New(log *slog.Logger) *Driver {
	return &Driver{
		log:            log,
		unitBackoff:    time.Second,
		unitBackoffMax: time.Minute,
		portBackoff:    500 * time.Millisecond,
		portBackoffMax: 30 * time.Second,
		buses:          make(map[string]*bus),
	}
}

// Stats returns a snapshot of the driver's counters.
func (d *Driver) Stats() Stats {
	d.mu.Lock()
	n := len(d.buses)
	d.mu.Unlock()
	return Stats{
		Requests:    d.c.requests.Load(),
		Responses:   d.c.responses.Load(),
		Exceptions:  d.c.exceptions.Load(),
		Timeouts:    d.c.timeouts.Load(),
		FrameErrors: d.c.frameErrors.Load(),
		PortErrors:  d.c.portErrors.Load(),
		Opens:       d.c.opens.Load(),
		Backoffs:    d.c.backoffs.Load(),
		Buses:       n,
	}
}

// Open compiles dev's read plan and attaches it to the bus of its port or
// TCP endpoint (starting the bus's owner goroutine if it is the first
// device there). It does not touch the device: a missing port is retried by
// the Conn's requests. The returned Conn implements devices.PollConn and
// devices.WriteConn; the caller must Close it.
func (d *Driver) Open(dev *devices.Device) (devices.Conn, error) {
	if errs := d.ValidateDevice(&dev.Config); len(errs) > 0 {
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return nil, fmt.Errorf("device %s: %w", dev.Name(), errors.Join(joined...))
	}
	settings := linkSettingsOf(&dev.Config)
	c, err := newConn(d, dev, settings)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", dev.Name(), err)
	}
	b, err := d.acquire(settings)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", dev.Name(), err)
	}
	c.bus = b
	return c, nil
}

// acquire returns the bus for s, creating and starting it if needed.
func (d *Driver) acquire(s linkSettings) (*bus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := s.key()
	b, ok := d.buses[key]
	if !ok {
		// The same configured port, resolved now but not when its first
		// device was opened (or the other way round).
		for _, other := range d.buses {
			if other.idents[s.ident] {
				b, ok = other, true
				break
			}
		}
	}
	if ok {
		if b.settings.line() != s.line() {
			return nil, fmt.Errorf("%s is already in use with %s, not %s", key, b.settings.line(), s.line())
		}
		b.refs++
		b.idents[s.ident] = true
		return b, nil
	}
	b = newBus(d, s)
	b.refs = 1
	d.buses[key] = b
	b.start()
	return b, nil
}

// release drops one reference to b; the last one stops its owner and waits.
func (d *Driver) release(b *bus) {
	d.mu.Lock()
	b.refs--
	last := b.refs == 0
	if last {
		delete(d.buses, b.settings.key())
	}
	d.mu.Unlock()
	if last {
		b.stopAndWait()
	}
}
