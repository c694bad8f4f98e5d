package modbus

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	mb "github.com/goburrow/modbus"
	"go.bug.st/serial"

	"github.com/fieldgate/fieldgate/devices"
)

func TestSilentInterval(t *testing.T) {
	for _, tt := range []struct {
		baud int
		want time.Duration
	}{
		{1200, 32083333 * time.Nanosecond},
		{9600, 4010416 * time.Nanosecond},
		{19200, 2005208 * time.Nanosecond},
		{38400, 1750 * time.Microsecond},
		{115200, 1750 * time.Microsecond},
	} {
		if got := Silent(tt.baud); got != tt.want {
			t.Errorf("Silent(%d) = %v, want %v", tt.baud, got, tt.want)
		}
	}
	// The reference: 10 registers at 115200 8N1 allow ~157 polls/s
	// (150/s with 11-bit characters).
	if r := wirePollRate(115200, 10, 11); r < 149 || r > 151 {
		t.Errorf("wirePollRate(115200, 10, 11) = %.1f, want ~150", r)
	}
}

// fakeTransport scripts transact results for the bus's backoff logic.
type fakeTransport struct {
	isopen    bool
	openErr   error
	opens     int
	transacts int
	err       error
}

func (f *fakeTransport) open() error {
	f.opens++
	if f.openErr != nil {
		return f.openErr
	}
	f.isopen = true
	return nil
}
func (f *fakeTransport) isOpen() bool { return f.isopen }
func (f *fakeTransport) close() error { f.isopen = false; return nil }
func (f *fakeTransport) transact(ctx context.Context, unit byte, req *mb.ProtocolDataUnit, timeout time.Duration) (*mb.ProtocolDataUnit, time.Time, error) {
	f.transacts++
	if f.err != nil {
		return nil, time.Time{}, f.err
	}
	return &mb.ProtocolDataUnit{FunctionCode: req.FunctionCode, Data: []byte{2, 0, 1}}, time.Now(), nil
}

func fakeBus(t *testing.T, tr transport) (*Driver, *bus) {
	d := New(slog.New(slog.DiscardHandler))
	d.unitBackoff, d.unitBackoffMax = time.Second, 4*time.Second
	d.portBackoff, d.portBackoffMax = time.Second, 2*time.Second
	b := newBus(d, linkSettings{transport: "tcp", busKey: "fake"})
	b.tr = tr
	b.start()
	t.Cleanup(b.stopAndWait)
	return d, b
}

var readOne = mb.ProtocolDataUnit{FunctionCode: 3, Data: []byte{0, 0, 0, 1}}

// TestUnitBackoffSchedule: a silent unit is retried, then backed off for
// 1s, 2s, 4s, 4s (doubling, capped); one answer resets it.
func TestUnitBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{err: ErrTimeout}
		_, b := fakeBus(t, tr)
		do := func() error {
			return b.do(context.Background(), &call{unit: 5, req: readOne, timeout: time.Second, retries: 1}).err
		}
		for i, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
			before := tr.transacts
			if err := do(); !errors.Is(err, ErrTimeout) {
				t.Fatalf("round %d: %v, want ErrTimeout", i, err)
			}
			if tr.transacts-before != 2 {
				t.Errorf("round %d: %d attempts, want 2", i, tr.transacts-before)
			}
			time.Sleep(backoff - time.Millisecond)
			if err := do(); !errors.Is(err, ErrUnitBackoff) {
				t.Fatalf("round %d: just before the backoff ends: %v, want ErrUnitBackoff", i, err)
			}
			time.Sleep(time.Millisecond)
		}
		tr.err = nil
		if err := do(); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
		tr.err = ErrTimeout
		do()
		time.Sleep(time.Second) // back to the first step: 1s
		tr.err = nil
		if err := do(); err != nil {
			t.Fatalf("backoff not reset by the answer: %v", err)
		}
	})
}

// TestPortBackoffSchedule: a port that cannot be opened is retried after
// 1s, then 2s (capped); requests in between fail fast with ErrPortBackoff.
func TestPortBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{openErr: devices.ErrPortNotFound}
		_, b := fakeBus(t, tr)
		do := func() error {
			return b.do(context.Background(), &call{unit: 1, req: readOne, timeout: time.Second}).err
		}
		if err := do(); !errors.Is(err, devices.ErrPortNotFound) {
			t.Fatalf("first: %v", err)
		}
		for _, backoff := range []time.Duration{time.Second, 2 * time.Second, 2 * time.Second} {
			opens := tr.opens
			time.Sleep(backoff - time.Millisecond)
			if err := do(); !errors.Is(err, ErrPortBackoff) || tr.opens != opens {
				t.Fatalf("during backoff: %v (opens %d→%d)", err, opens, tr.opens)
			}
			time.Sleep(time.Millisecond)
			if err := do(); !errors.Is(err, devices.ErrPortNotFound) || tr.opens != opens+1 {
				t.Fatalf("after backoff: %v (opens %d→%d)", err, opens, tr.opens)
			}
		}
		tr.openErr = nil
		time.Sleep(2 * time.Second)
		if err := do(); err != nil {
			t.Fatalf("after the port came back: %v", err)
		}
		// An I/O error closes the port; the retry reopens it at once.
		tr.err = errors.New("read: input/output error")
		opens := tr.opens
		if err := (b.do(context.Background(), &call{unit: 1, req: readOne, timeout: time.Second, retries: 1}).err); err == nil {
			t.Fatal("I/O error not reported")
		}
		if tr.opens != opens+1 {
			t.Errorf("opens after I/O error: %d, want %d", tr.opens, opens+1)
		}
	})
}

// fakePort is a serial.Port that answers every write with scripted bytes.
type fakePort struct {
	serial.Port // unused methods panic
	resp        []byte
	pending     []byte
	chunk       int
}

func (p *fakePort) Write(b []byte) (int, error)        { p.pending = p.resp; return len(b), nil }
func (p *fakePort) ResetInputBuffer() error            { p.pending = nil; return nil }
func (p *fakePort) SetReadTimeout(time.Duration) error { return nil }
func (p *fakePort) Close() error                       { return nil }
func (p *fakePort) Read(b []byte) (int, error) {
	n := min(len(b), len(p.pending), max(p.chunk, 1))
	copy(b, p.pending[:n])
	p.pending = p.pending[n:]
	return n, nil
}

// FuzzRTUResponse feeds arbitrary bytes to the RTU response reader in
// arbitrary chunks: it must never panic, and must only return a response
// whose CRC, unit and function match the request.
func FuzzRTUResponse(f *testing.F) {
	pk := mb.NewRTUClientHandler("")
	pk.SlaveId = 1
	good, _ := pk.Encode(&mb.ProtocolDataUnit{FunctionCode: 3, Data: []byte{4, 0x41, 0xAC, 0, 0}})
	exc, _ := pk.Encode(&mb.ProtocolDataUnit{FunctionCode: 0x83, Data: []byte{2}})
	f.Add(good, uint8(3), uint8(2))
	f.Add(exc, uint8(3), uint8(1))
	f.Add(append([]byte{0, 0xFF}, good...), uint8(3), uint8(7))
	f.Add(good[:5], uint8(3), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, fc uint8, chunk uint8) {
		cfg := devices.DeviceConfig{Baud: 115200, DataBits: 8, Parity: "N", StopBits: 1}
		tr := newRTUTransport(&cfg, slog.New(slog.DiscardHandler), &counters{})
		tr.interChar = 0 // a stalled partial frame fails at once
		tr.port = &fakePort{resp: data, chunk: int(chunk % 16)}
		req := mb.ProtocolDataUnit{FunctionCode: fc%6 + 1, Data: []byte{0, 0, 0, 2}}
		pdu, _, err := tr.transact(context.Background(), 1, &req, 0)
		if err != nil {
			var fe *frameError
			if !errors.Is(err, ErrTimeout) && !errors.As(err, &fe) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if pdu.FunctionCode&0x7F != req.FunctionCode {
			t.Fatalf("accepted function %d for request %d", pdu.FunctionCode, req.FunctionCode)
		}
		if _, err := pk.Decode(data[:len(pdu.Data)+4]); err != nil || data[0] != 1 {
			t.Fatalf("accepted a frame with bad CRC or unit: % x", data)
		}
		_ = checkResponse(&req, pdu) // must not panic on any accepted frame
	})
}
