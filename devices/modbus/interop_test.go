package modbus

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

// requirePeer fails (never skips) when a Debian peer is missing.
func requirePeer(t *testing.T, path string, args ...string) {
	t.Helper()
	if out, err := exec.Command(path, args...).CombinedOutput(); err != nil {
		t.Fatalf("peer %s %v unavailable (apt-get install -y socat python3-pymodbus): %v\n%s", path, args, err, out)
	}
}

// startPymodbus runs testdata/interop/pymodbus_slave.py and returns the
// TCP port it printed (0 for rtu).
func startPymodbus(t *testing.T, args ...string) string {
	t.Helper()
	requirePeer(t, "/usr/bin/python3", "-c", "import pymodbus.server.async_io")
	cmd := exec.Command("/usr/bin/python3", append([]string{"testdata/interop/pymodbus_slave.py"}, args...)...)
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pymodbus: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY ") {
		t.Fatalf("pymodbus slave did not start: %q %v", line, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "READY "))
}

// socatPair creates a virtual serial pair and returns its two links.
func socatPair(t *testing.T) (slaveEnd, masterEnd string) {
	t.Helper()
	requirePeer(t, "/usr/bin/socat", "-V")
	dir := t.TempDir()
	slaveEnd, masterEnd = filepath.Join(dir, "ttyV0"), filepath.Join(dir, "ttyV1")
	cmd := exec.Command("/usr/bin/socat", "pty,raw,echo=0,link="+slaveEnd, "pty,raw,echo=0,link="+masterEnd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, e1 := os.Stat(slaveEnd)
		_, e2 := os.Stat(masterEnd)
		if e1 == nil && e2 == nil {
			return slaveEnd, masterEnd
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat links did not appear: %v %v", e1, e2)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func interopPoints() []devices.PointConfig {
	return []devices.PointConfig{
		{Name: "f_abcd", Table: devices.TableHolding, Address: ptr(0), Type: "float32"},
		{Name: "f_cdab", Table: devices.TableHolding, Address: ptr(2), Type: "float32", Order: "CDAB"},
		{Name: "i16", Table: devices.TableHolding, Address: ptr(4), Type: "int16"},
		{Name: "u32", Table: devices.TableHolding, Address: ptr(5), Type: "uint32"},
		{Name: "name", Table: devices.TableHolding, Address: ptr(7), Type: "string", Length: 2},
		{Name: "base", Table: devices.TableHolding, Address: ptr(20), Type: "uint16", Writable: true},
		{Name: "temp", Table: devices.TableHolding, Address: ptr(30), Type: "float32", Writable: true},
		{Name: "in5", Table: devices.TableInput, Address: ptr(5), Type: "uint16"},
		{Name: "coil3", Table: devices.TableCoil, Address: ptr(3), Type: "bool", Writable: true},
		{Name: "coil4", Table: devices.TableCoil, Address: ptr(4), Type: "bool", Writable: true},
		{Name: "di1", Table: devices.TableDiscrete, Address: ptr(1), Type: "bool"},
		{Name: "beyond", Table: devices.TableHolding, Address: ptr(500), Type: "uint16"},
	}
}

// runInterop polls units 1 and 7 and a silent unit 9 of the pymodbus
// slave through the driver, writes, and reads back.
func runInterop(t *testing.T, mk func(name string, unit int) devices.DeviceConfig) {
	d := testDriver(t)
	c1, dev1 := open(t, d, mk("one", 1))
	c7, dev7 := open(t, d, mk("seven", 7))
	c9, dev9 := open(t, d, mk("nine", 9))
	read := func(c *Conn, dev *devices.Device) map[string]string {
		rs, err := pollAll(t, c, dev)
		if err != nil {
			t.Fatalf("poll %s: %v", dev.Name(), err)
		}
		got := map[string]string{}
		for _, r := range rs {
			got[r.Point.Name()] = describe(r)
		}
		return got
	}
	want := map[string]string{
		"f_abcd": "float64 21.5", "f_cdab": "float64 21.5", "i16": "int64 -2", "u32": "uint64 65538",
		"name": "string PYMB", "base": "uint64 100", "temp": "float64 0", "in5": "uint64 105",
		"coil3": "bool true", "coil4": "bool false", "di1": "bool true", "beyond": "exception 2",
	}
	if diff := cmp.Diff(want, read(c1, dev1)); diff != "" {
		t.Errorf("unit 1 (-want +got):\n%s", diff)
	}
	if _, err := pollAll(t, c9, dev9); !errors.Is(err, ErrTimeout) {
		t.Errorf("silent unit 9: %v, want ErrTimeout", err)
	}
	want7 := map[string]string{}
	for k, v := range want {
		want7[k] = v
	}
	want7["base"], want7["in5"] = "uint64 700", "uint64 705"
	if diff := cmp.Diff(want7, read(c7, dev7)); diff != "" {
		t.Errorf("unit 7 (-want +got):\n%s", diff)
	}
	ctx := context.Background()
	for _, w := range []struct {
		point string
		v     any
	}{{"base", uint64(4242)}, {"temp", -3.25}, {"coil4", true}, {"coil3", false}} {
		if err := c1.Write(ctx, dev1.Points[indexOf(dev1, w.point)], w.v); err != nil {
			t.Fatalf("write %s: %v", w.point, err)
		}
	}
	want["base"], want["temp"], want["coil4"], want["coil3"] = "uint64 4242", "float64 -3.25", "bool true", "bool false"
	if diff := cmp.Diff(want, read(c1, dev1)); diff != "" {
		t.Errorf("unit 1 after writes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want7, read(c7, dev7)); diff != "" {
		t.Errorf("unit 7 changed by unit 1's writes (-want +got):\n%s", diff)
	}
}

// TestInteropPymodbusRTU: the driver as master of Debian's pymodbus 3.0
// RTU slave on a socat pty pair.
func TestInteropPymodbusRTU(t *testing.T) {
	slaveEnd, masterEnd := socatPair(t)
	startPymodbus(t, "rtu", slaveEnd)
	runInterop(t, func(name string, unit int) devices.DeviceConfig {
		cfg := rtuConfig(name, masterEnd, unit, interopPoints()...)
		cfg.Timeout = 300 * time.Millisecond
		return cfg
	})
}

// TestInteropPymodbusTCP: the same against pymodbus's Modbus TCP server.
func TestInteropPymodbusTCP(t *testing.T) {
	port := startPymodbus(t, "tcp")
	runInterop(t, func(name string, unit int) devices.DeviceConfig {
		cfg := tcpConfig(name, "127.0.0.1:"+port, unit, interopPoints()...)
		cfg.Timeout = 300 * time.Millisecond
		return cfg
	})
}
