package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Against Debian's pymodbus: an exception (a register the slave does not
// have) and a timeout (a unit nobody answers for) are logged naming the
// device, the unit, the function and the address, with what to check.
func TestModbusErrorsInWords(t *testing.T) {
	dir := t.TempDir()
	startSocat(t, dir)
	startSlave(t, "rtu", filepath.Join(dir, "ttyV0"))
	tcpPort := freePort(t)
	startSlave(t, "tcp", fmt.Sprint(tcpPort))
	cfg := anonHeader + fmt.Sprintf(`devices:
  - name: meter
    driver: modbus
    transport: tcp
    address: 127.0.0.1:%d
    unit: 1
    poll: 1s
    points: [{name: power, table: holding, address: 500, type: uint16}]
  - name: heatpump
    driver: modbus
    transport: rtu
    port: %s
    unit: 9
    poll: 1s
    timeout: 200ms
    retries: 0
    points: [{name: flow, table: input, address: 3, type: int16}]
`, tcpPort, filepath.Join(dir, "ttyV1"))
	g := startGW(t, dir, cfg)
	wants := []string{
		"device meter unit 1: read holding registers (function 3) at address 500, count 1: modbus exception 2 (illegal data address); the device has no such register",
		"device heatpump unit 9: read input registers (function 4) at address 3, count 1: modbus: no response within 200ms; check the wiring (A/B), baud, parity and stop bits, and that unit matches the device's address",
	}
	eventually(t, 20*time.Second, "both errors in the log", func() bool {
		log := strings.ReplaceAll(g.log.String(), `\"`, `"`)
		for _, w := range wants {
			if !strings.Contains(log, w) {
				return false
			}
		}
		return true
	})
}
