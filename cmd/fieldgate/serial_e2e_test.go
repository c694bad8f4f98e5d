package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A line sensor on a socat pty pair, through the binary: good lines are
// published, garbage is counted and never published, and the device comes
// back after the adapter is unplugged (socat killed) and plugged in again.
func TestSerialSensorThroughBinary(t *testing.T) {
	need(t, "socat", "mosquitto_sub")
	dir := t.TempDir()
	socat := startSocat(t, dir)
	sensorEnd := filepath.Join(dir, "ttyV0")
	cfg := fmt.Sprintf(anonHeader+`devices:
  - name: weather
    driver: serial
    port: %s
    baud: 115200
    parse: {regex: '^T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+)$'}
    topic: "garden/{device}/{point}"
    points: [{name: temperature, unit: "°C"}, {name: humidity, unit: "%%"}]
`, filepath.Join(dir, "ttyV1"))
	g := startGW(t, dir, cfg)
	s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "garden/#")

	write := func(data string) {
		t.Helper()
		f, err := os.OpenFile(sensorEnd, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(data); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "first reading", func() bool {
		write("T=21.5 H=40\r\n")
		return hasPrefix(s, `garden/weather/temperature {"value":21.5`)
	})
	write("\x00\x01\x02garbage\r\nT=abc H=1\r\n\xff\xfe\r\n" + strings.Repeat("x", 5000) + "\r\nT=22.5 H=41\r\n")
	eventually(t, 10*time.Second, "reading after garbage", func() bool {
		return hasPrefix(s, `garden/weather/temperature {"value":22.5`) && hasPrefix(s, `garden/weather/humidity {"value":41`)
	})
	for _, l := range s.snapshot() {
		if strings.Contains(l, "garbage") || strings.Contains(l, "abc") || strings.Contains(l, "xxxx") {
			t.Errorf("garbage published: %q", l)
		}
	}
	eventually(t, 5*time.Second, "garbage counted in /metrics", func() bool {
		m := g.metrics(t)
		return strings.Contains(m, `fieldgate_serial_lines_total{device="weather",result="too_long"} 1`) &&
			strings.Contains(m, `fieldgate_serial_lines_total{device="weather",result="invalid_utf8"} 1`)
	})

	// Unplug: socat goes away, the device goes offline; replug: it comes back.
	_ = socat.Process.Kill()
	_ = socat.Wait()
	eventually(t, 15*time.Second, "offline after unplug", func() bool { return s.has("garden/weather/availability offline") })
	startSocat(t, dir)
	eventually(t, 60*time.Second, "reading after replug", func() bool {
		write("T=23.5 H=42\r\n")
		return hasPrefix(s, `garden/weather/temperature {"value":23.5`)
	})
	g.stop()
}
