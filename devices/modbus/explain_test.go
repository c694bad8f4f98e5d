package modbus

import (
	"strings"
	"testing"
	"time"
)

// A Modbus exception, a timeout and a CRC error each name the device, the
// unit, the function and the address, and say what to check.
func TestErrorsNameDeviceUnitFunctionAddress(t *testing.T) {
	for _, c := range []struct {
		name  string
		f     *fault
		unit  int
		wants []string
	}{
		{"exception", &fault{kind: "exception", code: 2}, 1, []string{
			"device meter unit 1: read holding registers (function 3) at address 40, count 1: modbus exception 2 (illegal data address); the device has no such register: check the point's table and address",
		}},
		{"timeout", nil, 9, []string{
			"device meter unit 9: read holding registers (function 3) at address 40, count 1: modbus: no response within 100ms; check the wiring (A/B), baud, parity and stop bits, and that unit matches the device's address",
		}},
		{"crc", &fault{kind: "crc"}, 1, []string{
			"device meter unit 1: read holding registers (function 3) at address 40, count 1: modbus: bad response: ",
			"; garbled answer (CRC or framing): check baud, parity, stop bits",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSlave(t, 1)
			p := newPty(t, "")
			s.serveRTU(p)
			d := testDriver(t)
			cfg := rtuConfig("meter", p.Link, c.unit, holdingU16("v", 40))
			cfg.Retries = ptr(0)
			cfg.Timeout = 100 * time.Millisecond
			conn, dev := open(t, d, cfg)
			if c.f != nil {
				s.script(*c.f)
			}
			rs, _ := pollAll(t, conn, dev)
			if rs[0].Err == nil {
				t.Fatal("no error")
			}
			got := rs[0].Err.Error()
			for _, w := range c.wants {
				if !strings.Contains(got, w) {
					t.Errorf("error %q\n lacks %q", got, w)
				}
			}
		})
	}
}
