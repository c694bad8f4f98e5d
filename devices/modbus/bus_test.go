package modbus

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

func holdingU16(name string, addr int) devices.PointConfig {
	return devices.PointConfig{Name: name, Table: devices.TableHolding, Address: ptr(addr), Type: "uint16"}
}

// TestRTUDeadUnitDoesNotStallOthers puts a live unit and a silent
// (unknown) unit on one port: the silent unit times out, is retried, then
// backed off (failing fast), while every poll of the live unit succeeds.
func TestRTUDeadUnitDoesNotStallOthers(t *testing.T) {
	s := newSlave(t, 1)
	s.setHolding(1, 0, 7)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	d.unitBackoff, d.unitBackoffMax = time.Hour, time.Hour // stays backed off for the test
	live, liveDev := open(t, d, rtuConfig("live", p.Link, 1, holdingU16("v", 0)))
	dead, deadDev := open(t, d, rtuConfig("dead", p.Link, 9, holdingU16("v", 0)))
	if st := d.Stats(); st.Buses != 1 {
		t.Fatalf("two devices on one port use %d buses, want 1", st.Buses)
	}

	_, err := pollAll(t, dead, deadDev)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("poll of silent unit: err = %v, want ErrTimeout", err)
	}
	if st := d.Stats(); st.Timeouts != 2 {
		t.Errorf("timeouts = %d, want 2 (one request + one retry)", st.Timeouts)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 20 {
		wg.Go(func() {
			rs, err := pollAll(t, live, liveDev)
			if err != nil || rs[0].Err != nil || rs[0].Value != uint64(7) {
				errs <- errors.Join(err, rs[0].Err)
			}
		})
		wg.Go(func() {
			if _, err := pollAll(t, dead, deadDev); !errors.Is(err, ErrUnitBackoff) {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent polls: %v", err)
	}
	if st := d.Stats(); st.Timeouts != 2 || st.Backoffs != 20 {
		t.Errorf("after backoff: timeouts = %d (want 2), backoffs = %d (want 20)", st.Timeouts, st.Backoffs)
	}
}

// TestRTUUnitBackoffExpires shows a backed-off unit is asked again later and
// recovers.
func TestRTUUnitBackoffExpires(t *testing.T) {
	s := newSlave(t, 1)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	c, dev := open(t, d, rtuConfig("dev", p.Link, 1, holdingU16("v", 0)))
	s.script(fault{kind: "silence"}, fault{kind: "silence"})
	if _, err := pollAll(t, c, dev); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := pollAll(t, c, dev)
		if err == nil && rs[0].Err == nil {
			break
		}
		if !errors.Is(err, ErrUnitBackoff) || time.Now().After(deadline) {
			t.Fatalf("unit did not recover: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRTULineErrors: garbage before a response, a CRC error and a frame
// split in pieces with short gaps are all recovered (resync + retry).
func TestRTULineErrors(t *testing.T) {
	for _, f := range []fault{
		{kind: "garbage"},
		{kind: "crc"},
		{kind: "split", gap: time.Millisecond},
	} {
		t.Run(f.kind, func(t *testing.T) {
			s := newSlave(t, 1)
			s.setHolding(1, 3, 0xBEEF)
			p := newPty(t, "")
			s.serveRTU(p)
			d := testDriver(t)
			cfg := rtuConfig("dev", p.Link, 1, holdingU16("v", 3))
			cfg.Retries = ptr(3)
			c, dev := open(t, d, cfg)
			s.script(f)
			rs, err := pollAll(t, c, dev)
			if err != nil || rs[0].Err != nil || rs[0].Value != uint64(0xBEEF) {
				t.Fatalf("poll after %s: %v %v %v", f.kind, err, rs[0].Value, rs[0].Err)
			}
			st := d.Stats()
			if f.kind != "split" && st.FrameErrors == 0 {
				t.Errorf("%s: no frame error counted", f.kind)
			}
			if st.PortErrors != 0 || st.Opens != 1 {
				t.Errorf("%s reopened the port: %+v", f.kind, st)
			}
		})
	}
}

// TestRTUInterCharacterGap: a response that stalls mid-frame for longer
// than the inter-character timeout is a broken frame, not a success.
func TestRTUInterCharacterGap(t *testing.T) {
	s := newSlave(t, 1)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	cfg := rtuConfig("dev", p.Link, 1, holdingU16("v", 0))
	cfg.Retries = ptr(0)
	cfg.Timeout = time.Second
	c, dev := open(t, d, cfg)
	s.script(fault{kind: "split", gap: 150 * time.Millisecond})
	_, err := pollAll(t, c, dev)
	var fe *frameError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a frame error", err)
	}
}

// TestExceptionIsNotALinkError: an exception marks the points of that
// request and keeps the port open.
func TestExceptionIsNotALinkError(t *testing.T) {
	s := newSlave(t, 1)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	c, dev := open(t, d, rtuConfig("dev", p.Link, 1, holdingU16("v", 0)))
	s.script(fault{kind: "exception", code: 6})
	rs, err := pollAll(t, c, dev)
	if err != nil {
		t.Fatalf("exception returned as device error: %v", err)
	}
	var ee ExceptionError
	if !errors.As(rs[0].Err, &ee) || ee.Code != 6 || ee.Function != 3 {
		t.Fatalf("reading err = %v, want ExceptionError{3, 6}", rs[0].Err)
	}
	if !strings.Contains(ee.Error(), "server device busy") {
		t.Errorf("Error() = %q", ee.Error())
	}
	if st := d.Stats(); st.Opens != 1 || st.PortErrors != 0 || st.Exceptions != 1 || st.Requests != 1 {
		t.Errorf("stats after exception: %+v", st)
	}
	if rs, _ := pollAll(t, c, dev); rs[0].Err != nil {
		t.Errorf("poll after exception: %v", rs[0].Err)
	}
}

// TestRTUUnplugReplug: the adapter disappears (EIO, link removed) and comes
// back as another device node behind the same stable link; the driver
// reopens it without being restarted.
func TestRTUUnplugReplug(t *testing.T) {
	s := newSlave(t, 1)
	s.setHolding(1, 0, 1)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	c, dev := open(t, d, rtuConfig("dev", p.Link, 1, holdingU16("v", 0)))
	if rs, err := pollAll(t, c, dev); err != nil || rs[0].Err != nil {
		t.Fatalf("first poll: %v %v", err, rs[0].Err)
	}
	p.unplug()
	rs, err := pollAll(t, c, dev)
	if err == nil || rs[0].Err == nil || rs[0].Value != nil {
		t.Fatalf("poll of unplugged port: %v %+v", err, rs[0])
	}
	if st := d.Stats(); st.PortErrors == 0 {
		t.Errorf("unplug not counted as a port error: %+v", st)
	}
	// Replug: a new pty under the same link.
	s.setHolding(1, 0, 2)
	p2 := newPty(t, p.Link)
	s.serveRTU(p2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := pollAll(t, c, dev)
		if err == nil && rs[0].Err == nil {
			if rs[0].Value != uint64(2) {
				t.Fatalf("after replug: %v", rs[0].Value)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reopened after replug: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := d.Stats(); st.Opens != 2 {
		t.Errorf("opens = %d, want 2", st.Opens)
	}
}

// TestRTUPortMissingAtOpen: Open does not fail for an absent port; polls
// fail (with backoff) until it appears.
func TestRTUPortMissingAtOpen(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyLater")
	d := testDriver(t)
	c, dev := open(t, d, rtuConfig("dev", link, 1, holdingU16("v", 0)))
	_, err := pollAll(t, c, dev)
	if !errors.Is(err, devices.ErrPortNotFound) {
		t.Fatalf("err = %v, want ErrPortNotFound", err)
	}
	if _, err := pollAll(t, c, dev); !errors.Is(err, ErrPortBackoff) {
		t.Fatalf("second poll err = %v, want ErrPortBackoff", err)
	}
	s := newSlave(t, 1)
	p := newPty(t, link)
	s.serveRTU(p)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := pollAll(t, c, dev)
		if err == nil && rs[0].Err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never opened: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSharedBusRefcount: devices on the same port share one bus, which
// closes with the last device; different line settings on one port are an
// Open error.
func TestSharedBusRefcount(t *testing.T) {
	s := newSlave(t, 1, 2)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	a, err := d.Open(newDevice(rtuConfig("a", p.Link, 1, holdingU16("v", 0))))
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Open(newDevice(rtuConfig("b", p.Link, 2, holdingU16("v", 0))))
	if err != nil {
		t.Fatal(err)
	}
	bad := rtuConfig("c", p.Link, 3, holdingU16("v", 0))
	bad.Baud = 9600
	if _, err := d.Open(newDevice(bad)); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("Open with other baud on a shared port: %v", err)
	}
	if st := d.Stats(); st.Buses != 1 {
		t.Errorf("buses = %d, want 1", st.Buses)
	}
	a.Close()
	if st := d.Stats(); st.Buses != 1 {
		t.Errorf("after one close: buses = %d, want 1", st.Buses)
	}
	b.Close()
	b.Close() // idempotent
	if _, err := b.(*Conn).Poll(context.Background(), nil); err != nil {
		t.Errorf("Poll of no points after Close: %v", err)
	}
	bd := b.(*Conn)
	if _, err := bd.Poll(context.Background(), bd.dev.Points); !errors.Is(err, errClosed) {
		t.Errorf("Poll after Close: %v, want errClosed", err)
	}
	if st := d.Stats(); st.Buses != 0 {
		t.Errorf("after last close: buses = %d, want 0", st.Buses)
	}
}

// TestTCPReconnectAndTransactionIDs: a dropped connection is re-established
// on the next request; a late answer to a timed-out request is skipped by
// its transaction id; two units behind one address share the connection.
func TestTCPReconnectAndTransactionIDs(t *testing.T) {
	s := newSlave(t, 1, 2)
	s.setHolding(1, 0, 11)
	s.setHolding(2, 0, 22)
	ts := s.serveTCP(t)
	d := testDriver(t)
	c1, dev1 := open(t, d, tcpConfig("one", ts.addr(), 1, holdingU16("v", 0)))
	c2, dev2 := open(t, d, tcpConfig("two", ts.addr(), 2, holdingU16("v", 0)))
	check := func(c *Conn, dev *devices.Device, want uint64) {
		t.Helper()
		rs, err := pollAll(t, c, dev)
		if err != nil || rs[0].Err != nil || rs[0].Value != want {
			t.Fatalf("poll %s: %v %v %v", dev.Name(), err, rs[0].Value, rs[0].Err)
		}
	}
	check(c1, dev1, 11)
	check(c2, dev2, 22)
	if st := d.Stats(); st.Buses != 1 || st.Opens != 1 {
		t.Errorf("two units behind one address: %+v", st)
	}

	ts.dropAll()
	check(c1, dev1, 11) // first attempt fails on the dead connection, the retry reconnects
	if st := d.Stats(); st.Opens != 2 || st.PortErrors != 1 {
		t.Errorf("after drop: %+v", st)
	}

	// Answer 1 arrives after the timeout; the retry (new transaction id)
	// must get its own answer, not the stale one.
	s.setHolding(1, 0, 12)
	s.script(fault{kind: "late", gap: 800 * time.Millisecond}) // timeout is 500ms
	check(c1, dev1, 12)
	if st := d.Stats(); st.Timeouts != 1 || st.Opens != 2 {
		t.Errorf("after late answer: %+v", st)
	}
	check(c2, dev2, 22)
}

// TestWrite covers FC5, FC6, FC16 and the bit read-modify-write, and
// refuses read-only tables and non-writable points.
func TestWrite(t *testing.T) {
	for _, transport := range []string{"rtu", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s := newSlave(t, 1)
			s.setHolding(1, 30, 0x00F0)
			points := []devices.PointConfig{
				{Name: "pump", Table: devices.TableCoil, Address: ptr(4), Type: "bool", Writable: true},
				{Name: "setpoint", Table: devices.TableHolding, Address: ptr(10), Type: "uint16", Writable: true},
				{Name: "temp", Table: devices.TableHolding, Address: ptr(20), Type: "float32", Order: "CDAB", Writable: true},
				{Name: "flag", Table: devices.TableHolding, Address: ptr(30), Type: "bit", Bit: ptr(9), Writable: true},
				{Name: "label", Table: devices.TableHolding, Address: ptr(40), Type: "string", Length: 3, Writable: true},
				{Name: "ro", Table: devices.TableHolding, Address: ptr(50), Type: "uint16"},
			}
			var cfg devices.DeviceConfig
			if transport == "rtu" {
				p := newPty(t, "")
				s.serveRTU(p)
				cfg = rtuConfig("dev", p.Link, 1, points...)
			} else {
				cfg = tcpConfig("dev", s.serveTCP(t).addr(), 1, points...)
			}
			d := testDriver(t)
			c, dev := open(t, d, cfg)
			ctx := context.Background()
			steps := []struct {
				point string
				v     any
				fc    byte
			}{
				{"pump", true, 5},
				{"setpoint", uint64(450), 6},
				{"temp", 21.5, 16},
				{"flag", true, 6},
				{"label", "ABCD", 16},
			}
			for _, st := range steps {
				if err := c.Write(ctx, dev.Points[indexOf(dev, st.point)], st.v); err != nil {
					t.Fatalf("write %s: %v", st.point, err)
				}
				if got := s.lastWrite(1); got != st.fc {
					t.Errorf("write %s used FC%d, want FC%d", st.point, got, st.fc)
				}
			}
			s.with(func(u map[byte]*bank) {
				b := u[1]
				got := []uint16{b.holding[10], b.holding[20], b.holding[21], b.holding[30], b.holding[40], b.holding[41], b.holding[42]}
				want := []uint16{450, 0x0000, 0x41AC, 0x02F0, 0x4142, 0x4344, 0}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("registers after writes (-want +got):\n%s", diff)
				}
				if !b.coils[4] {
					t.Error("coil 4 not set")
				}
			})
			if err := c.Write(ctx, dev.Points[indexOf(dev, "ro")], uint64(1)); err == nil {
				t.Error("write to a non-writable point accepted")
			}
			if err := c.Write(ctx, dev.Points[indexOf(dev, "setpoint")], uint64(70000)); err == nil {
				t.Error("write of 70000 to uint16 accepted")
			}
			if err := c.Write(ctx, dev.Points[indexOf(dev, "temp")], math.NaN()); !errors.Is(err, devices.ErrNotFinite) {
				t.Errorf("write NaN: %v", err)
			}
			// Read back through the codec.
			rs, err := pollAll(t, c, dev)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, r := range rs {
				got[r.Point.Name()] = describe(r)
			}
			want := map[string]string{
				"pump": "bool true", "setpoint": "uint64 450", "temp": "float64 21.5",
				"flag": "bool true", "label": "string ABCD", "ro": "uint64 0",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("read back (-want +got):\n%s", diff)
			}
		})
	}
}

func indexOf(dev *devices.Device, name string) int {
	for i, p := range dev.Points {
		if p.Name() == name {
			return i
		}
	}
	panic("no point " + name)
}

// TestPollSubset runs only the requests that hold the asked points.
func TestPollSubset(t *testing.T) {
	s := newSlave(t, 1)
	s.setHolding(1, 500, 5)
	ts := s.serveTCP(t)
	d := testDriver(t)
	c, dev := open(t, d, tcpConfig("dev", ts.addr(), 1, holdingU16("a", 0), holdingU16("b", 500)))
	rs, err := c.Poll(context.Background(), dev.Points[1:])
	if err != nil || len(rs) != 1 || rs[0].Value != uint64(5) || rs[0].Point != dev.Points[1] {
		t.Fatalf("Poll(b) = %+v, %v", rs, err)
	}
	if n := s.requests(1); n != 1 {
		t.Errorf("Poll of one point made %d requests", n)
	}
}

// TestPollCancelled returns promptly when ctx ends while a unit is silent.
func TestPollCancelled(t *testing.T) {
	s := newSlave(t, 1)
	p := newPty(t, "")
	s.serveRTU(p)
	d := testDriver(t)
	cfg := rtuConfig("dev", p.Link, 1, holdingU16("v", 0))
	cfg.Timeout = time.Hour
	c, dev := open(t, d, cfg)
	s.script(fault{kind: "silence"})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := c.Poll(ctx, dev.Points)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// TestRequestPause keeps at least request_pause between one device's
// requests (checked from the slave's side by the request count, not time).
func TestRequestPause(t *testing.T) {
	s := newSlave(t, 1)
	ts := s.serveTCP(t)
	d := testDriver(t)
	cfg := tcpConfig("dev", ts.addr(), 1, holdingU16("a", 0), holdingU16("b", 500))
	cfg.RequestPause = 30 * time.Millisecond
	c, dev := open(t, d, cfg)
	start := time.Now()
	if _, err := pollAll(t, c, dev); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < cfg.RequestPause {
		t.Errorf("two requests took %v, less than request_pause %v", el, cfg.RequestPause)
	}
}

// TestSharedBusAcrossPlug: a device opened while its port is absent and one
// opened after it appeared (same configured link) share one bus.
func TestSharedBusAcrossPlug(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyLater")
	d := testDriver(t)
	open(t, d, rtuConfig("a", link, 1, holdingU16("v", 0)))
	s := newSlave(t, 1, 2)
	p := newPty(t, link)
	s.serveRTU(p)
	c, dev := open(t, d, rtuConfig("b", link, 2, holdingU16("v", 0)))
	if st := d.Stats(); st.Buses != 1 {
		t.Fatalf("buses = %d, want 1", st.Buses)
	}
	if rs, err := pollAll(t, c, dev); err != nil || rs[0].Err != nil {
		t.Fatalf("poll: %v", err)
	}
}

// TestRS485UnsupportedContinues: a pty has no RS-485 mode (TIOCSRS485
// fails with ENOTTY); the driver logs it once and works on.
func TestRS485UnsupportedContinues(t *testing.T) {
	s := newSlave(t, 1)
	s.setHolding(1, 0, 9)
	p := newPty(t, "")
	s.serveRTU(p)
	var logs strings.Builder
	var mu sync.Mutex
	d := New(slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(b)
	}), nil)))
	cfg := rtuConfig("dev", p.Link, 1, holdingU16("v", 0))
	cfg.RS485 = &devices.RS485{Enabled: true, DelayRTSAfterSend: time.Millisecond, RTSHighDuringSend: true}
	c, dev := open(t, d, cfg)
	for range 2 {
		if rs, err := pollAll(t, c, dev); err != nil || rs[0].Value != uint64(9) {
			t.Fatalf("poll with rs485 on a pty: %v %v", err, rs[0].Err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "RS-485 mode not set"); n != 1 {
		t.Errorf("RS-485 warning logged %d times, want 1:\n%s", n, logs.String())
	}
	if err := setRS485(p.tty.Name(), cfg.RS485); !errors.Is(err, syscall.ENOTTY) {
		t.Errorf("setRS485 on a pty: %v, want ENOTTY", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
