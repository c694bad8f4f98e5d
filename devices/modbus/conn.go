package modbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/devices"
)

// Defaults of the per-request settings.
const (
	defaultTimeout = time.Second
	defaultRetries = 1
	defaultUnit    = 1
)

// Conn is an open Modbus device: its compiled read plan on its bus. It
// implements devices.PollConn and devices.WriteConn and is safe for
// concurrent use (requests are serialised by the bus). The opener calls
// Close once.
type Conn struct {
	d       *Driver
	dev     *devices.Device
	bus     *bus
	unit    byte
	timeout time.Duration
	retries int
	pause   time.Duration
	codecs  []*devices.RegisterCodec // by Point.Index
	plan    []*request

	// mu serialises this device's polls and writes so that request_pause
	// holds between its requests.
	mu        sync.Mutex
	lastReq   time.Time
	closeOnce sync.Once
}

var (
	_ devices.PollConn  = (*Conn)(nil)
	_ devices.WriteConn = (*Conn)(nil)
)

func newConn(d *Driver, dev *devices.Device, s linkSettings) (*Conn, error) {
	cfg := &dev.Config
	c := &Conn{d: d, dev: dev, unit: defaultUnit, timeout: cfg.Timeout, retries: defaultRetries, pause: cfg.RequestPause}
	if cfg.Unit != nil {
		c.unit = byte(*cfg.Unit)
	}
	if c.timeout <= 0 {
		c.timeout = defaultTimeout
	}
	if cfg.Retries != nil {
		c.retries = *cfg.Retries
	}
	c.codecs = make([]*devices.RegisterCodec, len(dev.Points))
	for i, p := range dev.Points {
		codec, err := codecOf(&p.Config)
		if err != nil {
			return nil, fmt.Errorf("point %s: %w", p.Name(), err)
		}
		c.codecs[i] = codec
	}
	plan, err := compilePlan(dev.Points, c.codecs, planOptionsOf(cfg))
	if err != nil {
		return nil, err
	}
	c.plan = plan
	return c, nil
}

// codecOf builds the codec of a point config.
func codecOf(p *devices.PointConfig) (*devices.RegisterCodec, error) {
	bit := 0
	if p.Bit != nil {
		bit = *p.Bit
	}
	return devices.NewRegisterCodec(p.Table, p.Type, p.Order, p.Length, bit)
}

// Close detaches the device from its bus; the last device on a bus stops
// the bus and closes its port.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.d.release(c.bus) })
	return nil
}

// pauseBeforeRequest honours request_pause between this device's requests.
func (c *Conn) pauseBeforeRequest(ctx context.Context) error {
	if c.pause <= 0 || c.lastReq.IsZero() {
		return nil
	}
	wait := c.pause - time.Since(c.lastReq)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Conn) do(ctx context.Context, req mb.ProtocolDataUnit) result {
	if err := c.pauseBeforeRequest(ctx); err != nil {
		return result{err: err}
	}
	r := c.bus.do(ctx, &call{unit: c.unit, req: req, timeout: c.timeout, retries: c.retries})
	if r.sent {
		c.lastReq = time.Now()
	}
	if r.err != nil {
		r.err = c.explain(req, r.err)
	}
	return r
}

// Poll runs the requests of the plan that contain any of points and returns
// one reading per point, in order. A failed request sets Err on its points;
// when no request got an answer (port gone, unit silent) Poll also returns
// that error for the whole device.
func (c *Conn) Poll(ctx context.Context, points []*devices.Point) ([]devices.Reading, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := make(map[int]int, len(points)) // Point.Index → position in points
	for i, p := range points {
		want[p.Index] = i
	}
	out := make([]devices.Reading, len(points))
	for i, p := range points {
		out[i] = devices.Reading{Point: p, Err: fmt.Errorf("point %s is not a point of device %s", p.Name(), c.dev.Name())}
	}
	answered, failed := 0, 0
	var linkErr error
	for _, req := range c.plan {
		needed := false
		for _, pp := range req.points {
			if _, ok := want[pp.index]; ok {
				needed = true
				break
			}
		}
		if !needed {
			continue
		}
		r := c.do(ctx, req.pdu())
		var ee ExceptionError
		switch {
		case r.err == nil || errors.As(r.err, &ee):
			answered++
		default:
			failed++
			if linkErr == nil {
				linkErr = r.err // the first failure is the cause; later ones are often backoffs
			}
		}
		for _, pp := range req.points {
			i, ok := want[pp.index]
			if !ok {
				continue
			}
			rd := devices.Reading{Point: points[i], Time: r.at}
			if r.err != nil {
				rd.Err = r.err
			} else {
				rd.Value, rd.Err = decodePoint(req, pp, r.pdu.Data[1:])
				if rd.Err != nil {
					rd.Value = nil
				}
			}
			out[i] = rd
		}
		if ctx.Err() != nil {
			break
		}
	}
	if answered == 0 && failed > 0 {
		return out, linkErr
	}
	return out, nil
}

// decodePoint extracts one point from a read response's data bytes (after
// the byte count).
func decodePoint(req *request, pp planPoint, data []byte) (any, error) {
	n := pp.codec.Count()
	words := make([]uint16, n)
	if devices.IsBitTable(req.table) {
		bit := pp.offset
		words[0] = uint16(data[bit/8] >> uint(bit%8) & 1)
	} else {
		for k := range words {
			o := 2 * (pp.offset + k)
			words[k] = uint16(data[o])<<8 | uint16(data[o+1])
		}
	}
	return pp.codec.Decode(words)
}

// Write encodes v with p's codec and writes it: FC5 for a coil, FC6 for a
// one-register value, FC16 for wider values; a `bit` point is written by
// reading its register (FC3), changing the bit and writing it back (FC6).
// Only writable points of the holding and coil tables accept writes.
func (c *Conn) Write(ctx context.Context, p *devices.Point, v any) error {
	if p.Index < 0 || p.Index >= len(c.codecs) || c.dev.Points[p.Index].Name() != p.Name() {
		return fmt.Errorf("write %s: not a point of device %s", p.Name(), c.dev.Name())
	}
	if !p.Config.Writable {
		return fmt.Errorf("write %s: point is not writable", p.Name())
	}
	codec := c.codecs[p.Index]
	addr := *p.Config.Address
	c.mu.Lock()
	defer c.mu.Unlock()
	var req mb.ProtocolDataUnit
	switch {
	case codec.Table == devices.TableCoil:
		words, err := codec.Encode(v)
		if err != nil {
			return fmt.Errorf("write %s: %w", p.Name(), err)
		}
		val := uint16(0)
		if words[0] != 0 {
			val = 0xFF00
		}
		req = mb.ProtocolDataUnit{FunctionCode: mb.FuncCodeWriteSingleCoil, Data: u16s(uint16(addr), val)}
	case codec.Table == devices.TableHolding && codec.Type == "bit":
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("write %s: got %T, want bool", p.Name(), v)
		}
		r := c.do(ctx, mb.ProtocolDataUnit{FunctionCode: mb.FuncCodeReadHoldingRegisters, Data: u16s(uint16(addr), 1)})
		if r.err != nil {
			return fmt.Errorf("write %s: %w", p.Name(), r.err)
		}
		cur := uint16(r.pdu.Data[1])<<8 | uint16(r.pdu.Data[2])
		req = mb.ProtocolDataUnit{FunctionCode: mb.FuncCodeWriteSingleRegister, Data: u16s(uint16(addr), codec.EncodeBit(cur, b))}
	case codec.Table == devices.TableHolding:
		words, err := codec.Encode(v)
		if err != nil {
			return fmt.Errorf("write %s: %w", p.Name(), err)
		}
		if len(words) == 1 {
			req = mb.ProtocolDataUnit{FunctionCode: mb.FuncCodeWriteSingleRegister, Data: u16s(uint16(addr), words[0])}
		} else {
			data := u16s(uint16(addr), uint16(len(words)))
			data = append(data, byte(2*len(words)))
			data = append(data, u16s(words...)...)
			req = mb.ProtocolDataUnit{FunctionCode: mb.FuncCodeWriteMultipleRegisters, Data: data}
		}
	default:
		return fmt.Errorf("write %s: table %s is read-only", p.Name(), codec.Table)
	}
	if r := c.do(ctx, req); r.err != nil {
		return fmt.Errorf("write %s: %w", p.Name(), r.err)
	}
	return nil
}

func u16s(vs ...uint16) []byte {
	b := make([]byte, 0, 2*len(vs))
	for _, v := range vs {
		b = append(b, byte(v>>8), byte(v))
	}
	return b
}
