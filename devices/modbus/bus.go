package modbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/devices"
)

// linkSettings are the parts of a device's config that define its bus.
type linkSettings struct {
	transport string // rtu | tcp
	cfg       devices.DeviceConfig
	ident     string // the configured port, usb identity or TCP address
	busKey    string // the resolved device node (or ident when unresolved)
}

func linkSettingsOf(cfg *devices.DeviceConfig) linkSettings {
	s := linkSettings{transport: cfg.Transport, cfg: *cfg}
	s.cfg.Points = nil
	if s.cfg.DataBits == 0 {
		s.cfg.DataBits = 8
	}
	if s.cfg.Parity == "" {
		s.cfg.Parity = "N"
	}
	s.cfg.Parity = strings.ToUpper(s.cfg.Parity)
	if s.cfg.StopBits == 0 {
		s.cfg.StopBits = 1
	}
	switch {
	case s.transport == "tcp":
		s.ident = "tcp " + cfg.Address
	case cfg.USB == nil:
		s.ident = "port " + cfg.Port
	default:
		s.ident = fmt.Sprintf("usb %s:%s:%s", strings.ToLower(cfg.USB.VID), strings.ToLower(cfg.USB.PID), cfg.USB.Serial)
	}
	s.busKey = s.ident
	if s.transport != "tcp" {
		// Devices whose resolved port is the same share the bus; a port
		// that is absent now is keyed by its configured identity.
		if path, err := devices.ResolvePort(cfg); err == nil {
			s.busKey = "port " + path
		}
	}
	return s
}

func (s linkSettings) key() string { return s.busKey }

// line describes the serial line settings, which all devices on one port
// must agree on.
func (s linkSettings) line() string {
	if s.transport == "tcp" {
		return "tcp"
	}
	return fmt.Sprintf("%d baud %d%s%d", s.cfg.Baud, s.cfg.DataBits, s.cfg.Parity, s.cfg.StopBits)
}

// transport performs one request/response exchange on a link. Only the bus
// owner goroutine calls it.
type transport interface {
	// open (re)opens the link.
	open() error
	// isOpen reports whether the link is open.
	isOpen() bool
	// close closes the link; it is a no-op when closed.
	close() error
	// transact sends req to unit and returns its response PDU (exception
	// responses included, unchecked) and the time it arrived. Errors:
	// ErrTimeout (no answer, link fine), *frameError (garbage, CRC; the
	// transport has resynchronised), anything else is an I/O error after
	// which the caller closes the link.
	transact(ctx context.Context, unit byte, req *mb.ProtocolDataUnit, timeout time.Duration) (*mb.ProtocolDataUnit, time.Time, error)
}

// errClosed is returned for requests on a Conn that was closed.
var errClosed = errors.New("modbus: device closed")

// frameError is a malformed or mismatched response.
type frameError struct{ msg string }

func (e *frameError) Error() string { return "modbus: bad response: " + e.msg }

// call is one request handed to the bus owner.
type call struct {
	ctx     context.Context
	unit    byte
	req     mb.ProtocolDataUnit
	timeout time.Duration
	retries int
	resp    chan result // buffered (1): the owner never blocks on it
}

type result struct {
	pdu  *mb.ProtocolDataUnit
	at   time.Time
	err  error
	sent bool // at least one attempt reached the wire
}

type unitState struct {
	fails int
	until time.Time
	last  error
}

// bus is one port or TCP endpoint and its owner goroutine.
type bus struct {
	d        *Driver
	settings linkSettings
	tr       transport
	refs     int             // guarded by d.mu
	idents   map[string]bool // configured identities of its devices; guarded by d.mu

	calls chan *call
	stop  chan struct{}
	done  chan struct{}

	// Owned by the owner goroutine.
	units     map[byte]*unitState
	openFails int
	nextOpen  time.Time
	openErr   error
	down      bool // logged as down
}

func newBus(d *Driver, s linkSettings) *bus {
	b := &bus{
		d:        d,
		settings: s,
		calls:    make(chan *call),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		units:    make(map[byte]*unitState),
		idents:   map[string]bool{s.ident: true},
	}
	log := d.log.With("bus", s.key())
	if s.transport == "tcp" {
		b.tr = newTCPTransport(s.cfg.Address, &d.c)
	} else {
		b.tr = newRTUTransport(&b.settings.cfg, log, &d.c)
	}
	return b
}

func (b *bus) start() { go b.run() }

func (b *bus) stopAndWait() {
	close(b.stop)
	<-b.done
}

func (b *bus) run() {
	defer close(b.done)
	defer b.tr.close()
	for {
		select {
		case <-b.stop:
			return
		case c := <-b.calls:
			c.resp <- b.exec(c)
		}
	}
}

// do runs req on the bus for unit and waits for its result or ctx.
func (b *bus) do(ctx context.Context, c *call) result {
	c.ctx = ctx
	c.resp = make(chan result, 1)
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return result{err: ctx.Err()}
	case <-b.done:
		return result{err: errClosed}
	}
	select {
	case r := <-c.resp:
		return r
	case <-ctx.Done():
		return result{err: ctx.Err()}
	}
}

// exec runs on the owner goroutine: unit and port backoff, retries, and the
// classification of errors.
func (b *bus) exec(c *call) result {
	if err := c.ctx.Err(); err != nil {
		return result{err: err}
	}
	now := time.Now()
	us := b.units[c.unit]
	if us == nil {
		us = &unitState{}
		b.units[c.unit] = us
	}
	if now.Before(us.until) {
		b.d.c.backoffs.Add(1)
		return result{err: fmt.Errorf("%w (last: %v)", ErrUnitBackoff, us.last)}
	}
	var last error
	sent := false
	for attempt := 0; attempt <= c.retries; attempt++ {
		if err := c.ctx.Err(); err != nil {
			return result{err: err, sent: sent}
		}
		if !b.tr.isOpen() {
			if err := b.reopen(); err != nil {
				return result{err: err, sent: sent}
			}
		}
		b.d.c.requests.Add(1)
		sent = true
		pdu, at, err := b.tr.transact(c.ctx, c.unit, &c.req, c.timeout)
		var fe *frameError
		switch {
		case err == nil:
			b.d.c.responses.Add(1)
			if us.fails > 0 {
				b.d.log.Info("unit answering again", "bus", b.settings.key(), "unit", c.unit)
			}
			us.fails, us.until, us.last = 0, time.Time{}, nil
			if pdu.FunctionCode == c.req.FunctionCode|0x80 {
				b.d.c.exceptions.Add(1)
				code := byte(0)
				if len(pdu.Data) > 0 {
					code = pdu.Data[0]
				}
				return result{err: ExceptionError{Function: c.req.FunctionCode, Code: code}, at: at, sent: true}
			}
			if err := checkResponse(&c.req, pdu); err != nil {
				b.d.c.frameErrors.Add(1)
				last = err
				continue
			}
			return result{pdu: pdu, at: at, sent: true}
		case errors.Is(err, ErrTimeout):
			b.d.c.timeouts.Add(1)
			last = err
		case errors.As(err, &fe):
			b.d.c.frameErrors.Add(1)
			last = err
		case c.ctx.Err() != nil:
			return result{err: c.ctx.Err(), sent: sent}
		default:
			b.d.c.portErrors.Add(1)
			b.tr.close()
			b.d.log.Warn("port failed; will reopen", "bus", b.settings.key(), "err", err)
			b.down = true
			last = err
		}
	}
	// No valid answer after every attempt: back off this unit.
	us.fails++
	backoff := b.d.unitBackoff << min(us.fails-1, 16)
	if backoff > b.d.unitBackoffMax || backoff <= 0 {
		backoff = b.d.unitBackoffMax
	}
	us.until = time.Now().Add(backoff)
	us.last = last
	if us.fails == 1 {
		b.d.log.Warn("unit not answering; backing off", "bus", b.settings.key(), "unit", c.unit, "err", last)
	}
	return result{err: last, sent: sent}
}

// reopen opens the transport unless its backoff has not expired.
func (b *bus) reopen() error {
	if time.Now().Before(b.nextOpen) {
		b.d.c.backoffs.Add(1)
		return fmt.Errorf("%w: %w", ErrPortBackoff, b.openErr)
	}
	if err := b.tr.open(); err != nil {
		b.openFails++
		backoff := b.d.portBackoff << min(b.openFails-1, 16)
		if backoff > b.d.portBackoffMax || backoff <= 0 {
			backoff = b.d.portBackoffMax
		}
		b.nextOpen = time.Now().Add(backoff)
		b.openErr = err
		if !b.down {
			b.d.log.Warn("port unavailable", "bus", b.settings.key(), "err", err)
			b.down = true
		}
		return err
	}
	b.d.c.opens.Add(1)
	b.openFails, b.nextOpen, b.openErr = 0, time.Time{}, nil
	if b.down {
		b.d.log.Info("port open again", "bus", b.settings.key())
		b.down = false
	}
	return nil
}

// checkResponse verifies that a normal response matches its request.
func checkResponse(req, resp *mb.ProtocolDataUnit) error {
	if resp.FunctionCode != req.FunctionCode {
		return &frameError{fmt.Sprintf("function %d in response to %d", resp.FunctionCode, req.FunctionCode)}
	}
	switch req.FunctionCode {
	case mb.FuncCodeReadCoils, mb.FuncCodeReadDiscreteInputs, mb.FuncCodeReadHoldingRegisters, mb.FuncCodeReadInputRegisters:
		qty := int(req.Data[2])<<8 | int(req.Data[3])
		want := 2 * qty
		if req.FunctionCode <= mb.FuncCodeReadDiscreteInputs {
			want = (qty + 7) / 8
		}
		if len(resp.Data) != want+1 || int(resp.Data[0]) != want {
			return &frameError{fmt.Sprintf("%d data bytes, want %d", len(resp.Data)-1, want)}
		}
	case mb.FuncCodeWriteSingleCoil, mb.FuncCodeWriteSingleRegister, mb.FuncCodeWriteMultipleCoils, mb.FuncCodeWriteMultipleRegisters:
		if len(resp.Data) != 4 || string(resp.Data[:4]) != string(req.Data[:4]) {
			return &frameError{"write echo does not match the request"}
		}
	}
	return nil
}
