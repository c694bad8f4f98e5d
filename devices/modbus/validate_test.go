package modbus

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

func TestValidateDeviceReportsAll(t *testing.T) {
	d := New(slog.New(slog.DiscardHandler))
	tests := []struct {
		name string
		cfg  devices.DeviceConfig
		want []string // paths
	}{
		{
			name: "valid rtu",
			cfg: devices.DeviceConfig{Transport: "rtu", Port: "/dev/serial/by-id/x", Baud: 9600, Unit: ptr(1), Points: []devices.PointConfig{
				{Name: "a", Table: "holding", Address: ptr(100), Type: "float32", Order: "CDAB"},
				{Name: "b", Table: "coil", Address: ptr(0), Writable: true},
				{Name: "c", Table: "input", Address: ptr(1), Type: "bit", Bit: ptr(15)},
				{Name: "d", Table: "holding", Address: ptr(5), Type: "string", Length: 8},
				{Name: "e", Table: "holding", Address: ptr(9), Type: "uint64", Order: "GHEFCDAB", Writable: true},
			}},
		},
		{
			name: "valid tcp",
			cfg: devices.DeviceConfig{Transport: "tcp", Address: "192.168.1.20:502", Unit: ptr(255), Points: []devices.PointConfig{
				{Name: "a", Table: "discrete", Address: ptr(65535), Type: "bool"},
			}},
		},
		{
			name: "everything wrong",
			cfg: devices.DeviceConfig{
				Transport: "rtu", Address: "x:1", Unit: ptr(248), DataBits: 9, Parity: "X", StopBits: 3,
				Retries: ptr(-1), MaxGap: ptr(-1), MaxRegisters: 200, Timeout: -time.Second, Request: "READ",
				Points: []devices.PointConfig{
					{Name: "p0", Table: "holdings", Address: ptr(1), Type: "int16"},
					{Name: "p1", Table: "holding", Type: "int8"},
					{Name: "p2", Table: "input", Address: ptr(70000), Type: "float32", Order: "ABCDEFGH", Writable: true},
					{Name: "p3", Table: "holding", Address: ptr(0), Type: "string"},
					{Name: "p4", Table: "holding", Address: ptr(0), Type: "bit"},
					{Name: "p5", Table: "holding", Address: ptr(0), Type: "bit", Bit: ptr(16)},
					{Name: "p6", Table: "coil", Address: ptr(0), Type: "int16", Order: "ABCD"},
					{Name: "p7", Table: "holding", Address: ptr(65535), Type: "float32", Length: 2, Bit: ptr(1)},
					{Name: "p8", Table: "discrete", Address: ptr(0), Writable: true, Sim: "sine"},
					{Name: "p9", Table: "", Address: ptr(0)},
				},
			},
			want: []string{
				"port", "address", "baud", "data_bits", "parity", "stop_bits", "unit", "timeout", "retries",
				"max_gap", "max_registers", "request",
				"points[0].table",
				"points[1].address", "points[1].type",
				"points[2].address", "points[2].writable", "points[2].order",
				"points[3].length",
				"points[4].bit",
				"points[5].bit",
				"points[6].order", "points[6].type",
				"points[7].length", "points[7].bit", "points[7].address",
				"points[8].sim", "points[8].writable",
				"points[9].table",
			},
		},
		{
			name: "tcp with serial keys",
			cfg: devices.DeviceConfig{Transport: "tcp", Address: "nohost", Baud: 9600, Port: "/dev/ttyUSB0", Points: []devices.PointConfig{
				{Name: "a", Table: "holding", Address: ptr(0), Type: "float64"},
			}, MaxRegisters: 2},
			want: []string{"address", "port", "baud", "points[0].type"},
		},
		{
			name: "no transport",
			cfg:  devices.DeviceConfig{},
			want: []string{"transport", "points"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range d.ValidateDevice(&tt.cfg) {
				got = append(got, e.Path)
				if e.Msg == "" {
					t.Errorf("%s: empty message", e.Path)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("paths (-want +got):\n%s\nerrors: %v", diff, d.ValidateDevice(&tt.cfg))
			}
		})
	}
}

func TestOpenRejectsInvalid(t *testing.T) {
	d := New(slog.New(slog.DiscardHandler))
	_, err := d.Open(newDevice(devices.DeviceConfig{Name: "x", Transport: "tcp"}))
	if err == nil || !strings.Contains(err.Error(), "address") {
		t.Fatalf("Open of invalid device: %v", err)
	}
}

// A port named by plug order is a configuration warning that the gateway
// logs once; Open, called again on every reconnect, does not repeat it.
func TestOpenDoesNotRepeatPortWarning(t *testing.T) {
	var buf bytes.Buffer
	d := New(slog.New(slog.NewTextHandler(&buf, nil)))
	for range 3 {
		c, err := d.Open(newDevice(rtuConfig("x", "/dev/ttyUSB7", 1, holdingU16("v", 0))))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if strings.Contains(buf.String(), "plug order") {
		t.Errorf("Open logged the port name warning: %q", buf.String())
	}
}

// TestProbe reads registers holding 21.5 as a word-swapped float32 and
// checks that the matching interpretation is ranked first.
func TestProbe(t *testing.T) {
	s := newSlave(t, 3)
	for i, v := range []uint16{0x0000, 0x41AC, 0x4142, 0x4344} {
		s.setHolding(3, 10+i, v)
	}
	ts := s.serveTCP(t)
	var out bytes.Buffer
	want := 21.5
	// Serial settings are ignored for TCP (the command line has defaults for them).
	opts := ProbeOptions{Transport: "tcp", Address: ts.addr(), Baud: 9600, DataBits: 8, Parity: "N", StopBits: 1,
		Unit: 3, Register: 10, Count: 4, Expect: &want}
	err := Probe(context.Background(), opts, &out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 7 || !strings.Contains(lines[1], "0x0000") || !strings.Contains(lines[2], "0x41ac") {
		t.Fatalf("raw registers missing:\n%s", out.String())
	}
	first := strings.Fields(lines[6])
	if diff := cmp.Diff([]string{"@10", "float32", "CDAB", "21.5"}, first); diff != "" {
		t.Errorf("best interpretation (-want +got):\n%s\n%s", diff, out.String())
	}
	if !strings.Contains(out.String(), `"\x00\x00A\xacABCD"`) && !strings.Contains(out.String(), "string") {
		t.Errorf("no string interpretation:\n%s", out.String())
	}
	if err := Probe(context.Background(), ProbeOptions{Transport: "tcp", Address: ts.addr(), Unit: 3, Count: 126}, &out); err == nil {
		t.Error("count 126 accepted")
	}

	// RTU, coils.
	p := newPty(t, "")
	s.serveRTU(p)
	s.with(func(u map[byte]*bank) { u[3].coils[2] = true })
	out.Reset()
	err = Probe(context.Background(), ProbeOptions{Transport: "rtu", Port: p.Link, Baud: 19200, Unit: 3, Table: "coil", Register: 0, Count: 3}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "coil 0+3 (unit 3):\n      0  0\n      1  0\n      2  1\n"; out.String() != want {
		t.Errorf("coil probe = %q, want %q", out.String(), want)
	}
}
