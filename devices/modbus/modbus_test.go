package modbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/fieldgate/fieldgate/devices"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// testDriver returns a driver with backoffs short enough for tests.
func testDriver(t *testing.T) *Driver {
	d := New(testLogger(t))
	d.unitBackoff, d.unitBackoffMax = 50*time.Millisecond, 200*time.Millisecond
	d.portBackoff, d.portBackoffMax = 20*time.Millisecond, 100*time.Millisecond
	return d
}

func newDevice(cfg devices.DeviceConfig) *devices.Device {
	dev := &devices.Device{Config: cfg}
	for i := range cfg.Points {
		dev.Points = append(dev.Points, &devices.Point{Config: cfg.Points[i], Device: dev, Index: i})
	}
	return dev
}

func ptr[T any](v T) *T { return &v }

func rtuConfig(name, link string, unit int, points ...devices.PointConfig) devices.DeviceConfig {
	return devices.DeviceConfig{
		Name: name, Driver: "modbus", Transport: "rtu", Port: link, Baud: 115200, Unit: &unit,
		Timeout: 500 * time.Millisecond, Retries: ptr(1), Points: points,
	}
}

func tcpConfig(name, addr string, unit int, points ...devices.PointConfig) devices.DeviceConfig {
	return devices.DeviceConfig{
		Name: name, Driver: "modbus", Transport: "tcp", Address: addr, Unit: &unit,
		Timeout: 500 * time.Millisecond, Retries: ptr(1), Points: points,
	}
}

func open(t *testing.T, d *Driver, cfg devices.DeviceConfig) (*Conn, *devices.Device) {
	t.Helper()
	dev := newDevice(cfg)
	c, err := d.Open(dev)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*Conn), dev
}

func pollAll(t *testing.T, c *Conn, dev *devices.Device) ([]devices.Reading, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Poll(ctx, dev.Points)
}

// describe renders a reading as the golden files write it.
func describe(r devices.Reading) string {
	var ee ExceptionError
	switch {
	case r.Err == nil:
		return fmt.Sprintf("%T %v", r.Value, r.Value)
	case errors.As(r.Err, &ee):
		return fmt.Sprintf("exception %d", ee.Code)
	case errors.Is(r.Err, devices.ErrNotFinite):
		return "not finite"
	case errors.Is(r.Err, ErrTimeout):
		return "timeout"
	}
	return "error " + r.Err.Error()
}

// goldenCase is testdata/<case>/case.json: a device map, a register bank
// and the raw value (or error) expected for every point.
type goldenCase struct {
	MaxGap             *int              `json:"max_gap"`
	MaxRegisters       int               `json:"max_registers"`
	OneRequestPerPoint bool              `json:"one_request_per_point"`
	Points             []goldenPoint     `json:"points"`
	Holding            map[string]string `json:"holding"` // address → hex words
	Input              map[string]string `json:"input"`
	Coils              map[string]string `json:"coils"` // address → 0/1 list
	Discretes          map[string]string `json:"discretes"`
	Exceptions         map[string]byte   `json:"exceptions"` // register address → exception code
	Want               map[string]string `json:"want"`       // point → "type value" | "exception N" | "not finite"
	Requests           int               `json:"requests"`   // read requests one poll takes
}

type goldenPoint struct {
	Name    string `json:"name"`
	Table   string `json:"table"`
	Address int    `json:"address"`
	Type    string `json:"type"`
	Order   string `json:"order"`
	Length  int    `json:"length"`
	Bit     *int   `json:"bit"`
}

func loadGolden(t *testing.T, dir string) goldenCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
	if err != nil {
		t.Fatal(err)
	}
	var gc goldenCase
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&gc); err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return gc
}

func (gc goldenCase) fill(t *testing.T, b *bank) {
	words := func(dst []uint16, m map[string]string) {
		for a, s := range m {
			addr, err := strconv.Atoi(a)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range strings.Fields(s) {
				v, err := strconv.ParseUint(f, 16, 16)
				if err != nil {
					t.Fatal(err)
				}
				dst[addr+i] = uint16(v)
			}
		}
	}
	bits := func(dst []bool, m map[string]string) {
		for a, s := range m {
			addr, err := strconv.Atoi(a)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range strings.Fields(s) {
				dst[addr+i] = f == "1"
			}
		}
	}
	words(b.holding[:], gc.Holding)
	words(b.input[:], gc.Input)
	bits(b.coils[:], gc.Coils)
	bits(b.discretes[:], gc.Discretes)
	for a, code := range gc.Exceptions {
		addr, _ := strconv.Atoi(a)
		b.exceptionAt[addr] = code
	}
}

func (gc goldenCase) points() []devices.PointConfig {
	var ps []devices.PointConfig
	for _, p := range gc.Points {
		ps = append(ps, devices.PointConfig{Name: p.Name, Table: p.Table, Address: ptr(p.Address), Type: p.Type, Order: p.Order, Length: p.Length, Bit: p.Bit})
	}
	return ps
}

// TestGolden runs every testdata/<case> against the in-process slave over
// RTU on a pty and over TCP: planning (number of requests), decoding of
// every type and order, exceptions on the affected points only.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/case.json")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, f := range dirs {
		dir := filepath.Dir(f)
		gc := loadGolden(t, dir)
		for _, transport := range []string{"rtu", "tcp"} {
			t.Run(filepath.Base(dir)+"/"+transport, func(t *testing.T) {
				s := newSlave(t, 1)
				gc.fill(t, s.bank(1))
				var cfg devices.DeviceConfig
				if transport == "rtu" {
					p := newPty(t, "")
					s.serveRTU(p)
					cfg = rtuConfig("golden", p.Link, 1, gc.points()...)
				} else {
					cfg = tcpConfig("golden", s.serveTCP(t).addr(), 1, gc.points()...)
				}
				cfg.MaxGap, cfg.MaxRegisters, cfg.OneRequestPerPoint = gc.MaxGap, gc.MaxRegisters, gc.OneRequestPerPoint
				if errs := testDriver(t).ValidateDevice(&cfg); len(errs) > 0 {
					t.Fatalf("golden device invalid: %v", errs)
				}
				c, dev := open(t, testDriver(t), cfg)
				start := time.Now()
				rs, err := pollAll(t, c, dev)
				if err != nil {
					t.Fatalf("Poll: %v", err)
				}
				got := map[string]string{}
				for i, r := range rs {
					if r.Point != dev.Points[i] {
						t.Errorf("reading %d is for %v, want %s", i, r.Point, dev.Points[i].Name())
					}
					if r.Err == nil && (r.Time.Before(start) || r.Time.After(time.Now())) {
						t.Errorf("%s: sample time %v outside the poll", r.Point.Name(), r.Time)
					}
					if (r.Err == nil) == (r.Value == nil) {
						t.Errorf("%s: value %v with err %v", r.Point.Name(), r.Value, r.Err)
					}
					got[r.Point.Name()] = describe(r)
				}
				if diff := cmp.Diff(gc.Want, got); diff != "" {
					t.Errorf("readings (-want +got):\n%s", diff)
				}
				if n := s.requests(1); n != gc.Requests {
					t.Errorf("poll took %d requests, want %d", n, gc.Requests)
				}
			})
		}
	}
}
