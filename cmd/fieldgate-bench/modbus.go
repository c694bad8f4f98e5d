package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

//go:embed slave.py
var slaveScript []byte

// Modbus RTU framing used for the wire-limited rate: one read of
// modbusRegs holding registers per poll.
const (
	modbusRegs     = 2
	modbusReqBytes = 8                // unit, fc, addr(2), count(2), crc(2)
	modbusRspBytes = 5 + 2*modbusRegs // unit, fc, n, data, crc(2)
	bitsPerChar    = 10               // 8N1 on the wire: start, 8 data, stop
	bitsPerSilence = 11               // the spec's t3.5 counts 11-bit characters
	modbusPoll     = "1ms"            // as fast as the driver goes
)

// wireLimit is the most polls/s a real 8N1 line at baud can carry: the bits
// of request and response plus the 3.5-character silence after each frame
// (3.5 × 11 bit times, fixed at 1.75 ms above 19200 baud, per the Modbus
// serial line spec).
func wireLimit(baud int) float64 {
	t35 := 3.5 * bitsPerSilence / float64(baud)
	if baud > 19200 {
		t35 = 0.00175
	}
	cycle := float64((modbusReqBytes+modbusRspBytes)*bitsPerChar)/float64(baud) + 2*t35
	return 1 / cycle
}

// Modbus slaves the bench can put on the far end of the pty pair.
const (
	slavePymodbus = "pymodbus" // Debian's python3-pymodbus
	slaveGo       = "go"       // goSlave, in this process
)

// modbus runs the gateway with one RTU device on a socat pty pair against a
// slave (Debian's pymodbus or the in-bench Go one) and reads the device
// poll counter from /metrics.
func modbus(ctx context.Context, o *options, dir, slaveKind string) (r result) {
	r = result{Scenario: "modbus-" + slaveKind, Target: "gateway", Extra: map[string]float64{
		"baud":             float64(o.modbusBaud),
		"wire_limit_per_s": wireLimit(o.modbusBaud),
	}}
	fail := func(err error) result { r.Error = err.Error(); return r }
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	a, b := filepath.Join(dir, "ttyV0"), filepath.Join(dir, "ttyV1")
	socat, err := startProc("socat", "socat", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	if err != nil {
		return fail(fmt.Errorf("%w (apt-get install -y socat)", err))
	}
	defer socat.stop(time.Second)
	if err := socat.waitFor(10*time.Second, "pty links", func() bool {
		_, e1 := os.Stat(a)
		_, e2 := os.Stat(b)
		return e1 == nil && e2 == nil
	}); err != nil {
		return fail(err)
	}
	if slaveKind == slaveGo {
		gs, err := startGoSlave(a)
		if err != nil {
			return fail(err)
		}
		defer func() {
			if err := gs.stop(); err != nil && r.Error == "" {
				r.Error = err.Error()
			}
		}()
	} else {
		script := filepath.Join(dir, "slave.py")
		if err := os.WriteFile(script, slaveScript, 0o600); err != nil {
			return fail(err)
		}
		slave, err := startProc("pymodbus slave", o.python, script, a, fmt.Sprint(o.modbusBaud))
		if err != nil {
			return fail(fmt.Errorf("%w (apt-get install -y python3-pymodbus)", err))
		}
		defer slave.stop(time.Second)
		if err := slave.waitFor(20*time.Second, "ready", func() bool { return strings.Contains(slave.out.String(), "ready") }); err != nil {
			return fail(err)
		}
	}
	devs := fmt.Sprintf(`devices:
  - name: bench
    driver: modbus
    transport: rtu
    port: %s
    baud: %d
    parity: N
    unit: 1
    poll: %s
    timeout: 500ms
    topic: "bench/{device}/{point}"
    points:
      - {name: temperature, table: holding, address: 100, type: float32, order: CDAB}
`, b, o.modbusBaud, modbusPoll)
	gw, err := startGateway(o.gateway, filepath.Join(dir, "gateway"), o.host, gatewaySpec{devices: devs})
	if err != nil {
		return fail(err)
	}
	defer gw.stop()
	polls := func() (float64, string, error) {
		m, err := gw.metrics()
		if err != nil {
			return 0, "", err
		}
		v, name, ok := metricValue(m, metricPolls, hintPolls)
		if !ok {
			return 0, "", fmt.Errorf("no poll counter %s on /metrics", metricPolls)
		}
		return v, name, nil
	}
	// Warm up: the first poll opens the port.
	deadline := time.Now().Add(20 * time.Second)
	var p0 float64
	var name string
	for p0 == 0 {
		if p0, name, err = polls(); err != nil {
			return fail(err)
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%s stayed 0 for 20s: %s", name, tail(gw.p.out.String(), 2000)))
		}
		if waitCtx(ctx, 100*time.Millisecond) != nil {
			return fail(ctx.Err())
		}
	}
	cpu0, _ := gw.cpuSeconds()
	t0 := time.Now()
	p0, _, _ = polls()
	if waitCtx(ctx, o.modbusWindow) != nil {
		return fail(ctx.Err())
	}
	p1, _, err := polls()
	if err != nil {
		return fail(err)
	}
	r.Seconds = time.Since(t0).Seconds()
	cpu1, _ := gw.cpuSeconds()
	r.CPUSeconds = cpu1 - cpu0
	r.Published = int64(p1 - p0)
	r.Rate = (p1 - p0) / r.Seconds
	if r.Published > 0 {
		r.CPUPerMsg = r.CPUSeconds / float64(r.Published)
	}
	r.PeakRSS, _, _ = procMem(gw.p.pid())
	r.Note = fmt.Sprintf("metric %s; a pty carries bytes instantly (no baud rate), so polls/s may exceed the wire limit: only the driver's t3.5 pacing and the round trip bound it", name)
	return r
}
