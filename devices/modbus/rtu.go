package modbus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	mb "github.com/goburrow/modbus"
	"go.bug.st/serial"

	"github.com/fieldgate/fieldgate/devices"
)

// maxRTUFrame is the largest RTU frame (address + PDU + CRC).
const maxRTUFrame = 256

// readSlice bounds one blocking read so that a cancelled context is noticed.
const readSlice = 100 * time.Millisecond

// usbLatency is added to the inter-character timeout: USB serial adapters
// hand received bytes to the host in chunks (FTDI: every 16 ms by default),
// so the gaps the host sees are longer than the gaps on the wire.
const usbLatency = 20 * time.Millisecond

// Silent returns the Modbus RTU inter-frame silent interval t3.5 for a baud
// rate: 3.5 character times of 11 bits, and a fixed 1.75 ms above 19200 baud
// (Modbus over serial line V1.02, 2.5.1.1).
func Silent(baud int) time.Duration {
	if baud > 19200 || baud <= 0 {
		return 1750 * time.Microsecond
	}
	return time.Duration(3.5 * 11 * float64(time.Second) / float64(baud))
}

// charTime is the time one character of the given line settings takes on
// the wire: start bit, data bits, parity bit, stop bits.
func charTime(cfg *devices.DeviceConfig) time.Duration {
	bits := 1 + cfg.DataBits + cfg.StopBits
	if cfg.Parity != "N" {
		bits++
	}
	return time.Duration(bits) * time.Second / time.Duration(max(cfg.Baud, 1))
}

// shortSleepMax is the longest t3.5 wait done with shortSleep (not
// interruptible by ctx); longer ones (below 9600 baud) use a timer.
const shortSleepMax = 5 * time.Millisecond

// rtuTransport is Modbus RTU on a serial port. It reads each response by its
// expected length (known from the function code and byte count) with an
// inter-character timeout, and sleeps only when the t3.5 silent interval
// since the last frame on the line has not elapsed yet.
type rtuTransport struct {
	cfg *devices.DeviceConfig
	log *slog.Logger
	c   *counters

	port      serial.Port
	path      string
	t35       time.Duration
	charTime  time.Duration
	interChar time.Duration
	last      time.Time // end of the last frame on the line
	pk        *mb.RTUClientHandler
	buf       [maxRTUFrame]byte
	rs485Warn bool
	// stale is set after a timeout: a late answer may still be on its way,
	// so the next request first waits for the line to be quiet.
	stale bool
}

func newRTUTransport(cfg *devices.DeviceConfig, log *slog.Logger, c *counters) *rtuTransport {
	t35 := Silent(cfg.Baud)
	return &rtuTransport{
		cfg:       cfg,
		log:       log,
		c:         c,
		t35:       t35,
		charTime:  charTime(cfg),
		interChar: t35 + usbLatency,
		pk:        mb.NewRTUClientHandler(""), // used only as a packager: Encode, Decode
	}
}

func (t *rtuTransport) isOpen() bool { return t.port != nil }

func (t *rtuTransport) open() error {
	path, err := devices.ResolvePort(t.cfg)
	if err != nil {
		return err
	}
	if t.cfg.RS485 != nil && t.cfg.RS485.Enabled {
		if err := setRS485(path, t.cfg.RS485); err != nil && !t.rs485Warn {
			t.log.Warn("RS-485 mode not set; continuing without it", "port", path, "err", err)
			t.rs485Warn = true
		}
	}
	parity := map[string]serial.Parity{"N": serial.NoParity, "E": serial.EvenParity, "O": serial.OddParity}[t.cfg.Parity]
	stop := serial.OneStopBit
	if t.cfg.StopBits == 2 {
		stop = serial.TwoStopBits
	}
	p, err := serial.Open(path, &serial.Mode{BaudRate: t.cfg.Baud, DataBits: t.cfg.DataBits, Parity: parity, StopBits: stop})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	t.port, t.path = p, path
	t.last, t.stale = time.Time{}, false
	return nil
}

func (t *rtuTransport) close() error {
	if t.port == nil {
		return nil
	}
	err := t.port.Close()
	t.port = nil
	return err
}

// waitSilent sleeps until t3.5 has passed since the last frame, if needed.
func (t *rtuTransport) waitSilent(ctx context.Context) error {
	wait := t.t35 - time.Since(t.last)
	if wait <= 0 {
		return nil
	}
	if wait <= shortSleepMax {
		shortSleep(wait)
		return ctx.Err()
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

func (t *rtuTransport) transact(ctx context.Context, unit byte, req *mb.ProtocolDataUnit, timeout time.Duration) (*mb.ProtocolDataUnit, time.Time, error) {
	t.pk.SlaveId = unit
	adu, err := t.pk.Encode(req)
	if err != nil {
		return nil, time.Time{}, &frameError{err.Error()}
	}
	if err := t.waitSilent(ctx); err != nil {
		return nil, time.Time{}, err
	}
	if t.stale {
		t.resync(ctx)
		t.stale = false
	}
	// Bytes left over from an earlier, late answer would corrupt this one.
	if err := t.port.ResetInputBuffer(); err != nil {
		return nil, time.Time{}, fmt.Errorf("flush %s: %w", t.path, err)
	}
	for off := 0; off < len(adu); {
		n, err := t.port.Write(adu[off:])
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("write %s: %w", t.path, err)
		}
		off += n
	}
	sent := time.Now()
	txEnd := sent.Add(time.Duration(len(adu)) * t.charTime)
	t.last = txEnd
	if unit == 0 {
		// Broadcast: nobody answers. Keep the line quiet until the request
		// is on the wire and the slaves had a turnaround delay.
		t.last = txEnd.Add(timeout)
		return &mb.ProtocolDataUnit{FunctionCode: req.FunctionCode, Data: req.Data}, txEnd, nil
	}
	deadline := txEnd.Add(timeout)
	n, want := 0, 0
	var arrived time.Time
	for want == 0 || n < want {
		if err := ctx.Err(); err != nil {
			return nil, time.Time{}, err
		}
		var rto time.Duration
		if n == 0 {
			rto = time.Until(deadline)
			if rto <= 0 {
				t.stale = true
				return nil, time.Time{}, fmt.Errorf("%w within %s", ErrTimeout, timeout)
			}
		} else {
			rto = t.interChar
		}
		if err := t.port.SetReadTimeout(min(rto, readSlice)); err != nil {
			return nil, time.Time{}, fmt.Errorf("set read timeout on %s: %w", t.path, err)
		}
		// Read whatever has arrived (usually the whole frame at once);
		// bytes past the frame are noise, dropped by the flush before the
		// next request.
		k, err := t.port.Read(t.buf[n:])
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("read %s: %w", t.path, err)
		}
		now := time.Now()
		if k == 0 {
			if n > 0 && now.Sub(t.last) >= t.interChar {
				t.resync(ctx)
				return nil, time.Time{}, &frameError{fmt.Sprintf("frame cut after %d bytes (gap > %v)", n, t.interChar)}
			}
			continue
		}
		n += k
		t.last, arrived = now, now
		want = rtuFrameLength(t.buf[:n], unit, req.FunctionCode)
		if want < 0 {
			t.resync(ctx)
			return nil, time.Time{}, &frameError{fmt.Sprintf("unexpected bytes % x", t.buf[:n])}
		}
	}
	pdu, err := t.pk.Decode(t.buf[:want])
	if err != nil {
		t.resync(ctx)
		return nil, time.Time{}, &frameError{err.Error()}
	}
	// Decode returns a slice of t.buf: copy it out of the reused buffer.
	pdu.Data = append([]byte(nil), pdu.Data...)
	return pdu, arrived, nil
}

// rtuFrameLength returns the length of the response frame that starts with
// b (0 while unknown), or -1 when b cannot start the response of unit to
// function fc.
func rtuFrameLength(b []byte, unit, fc byte) int {
	if len(b) >= 1 && b[0] != unit {
		return -1
	}
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case fc | 0x80:
		return 5
	case fc:
	default:
		return -1
	}
	switch fc {
	case mb.FuncCodeReadCoils, mb.FuncCodeReadDiscreteInputs, mb.FuncCodeReadHoldingRegisters, mb.FuncCodeReadInputRegisters:
		if len(b) < 3 {
			return 0
		}
		if n := 3 + int(b[2]) + 2; n <= maxRTUFrame {
			return n
		}
		return -1 // no valid response is this long
	case mb.FuncCodeWriteSingleCoil, mb.FuncCodeWriteSingleRegister, mb.FuncCodeWriteMultipleCoils, mb.FuncCodeWriteMultipleRegisters:
		return 8
	}
	return -1
}

// resync discards input until the line has been silent for the
// inter-character timeout (at most about one second), so the next request
// starts on a frame boundary.
func (t *rtuTransport) resync(ctx context.Context) {
	var junk [64]byte
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) && ctx.Err() == nil {
		if err := t.port.SetReadTimeout(t.interChar); err != nil {
			return
		}
		k, err := t.port.Read(junk[:])
		if err != nil || k == 0 {
			break
		}
		t.last = time.Now()
	}
	_ = t.port.ResetInputBuffer() // a failing port shows up on the next request
}
