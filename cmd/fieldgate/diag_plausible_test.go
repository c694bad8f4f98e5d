package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A reading outside its point's valid range is published with
// "quality":"bad" (and its value), counted in /metrics and logged once.
func TestImplausibleReadingsMarked(t *testing.T) {
	need(t, "mosquitto_sub")
	cfg := anonHeader + `devices:
  - name: boiler
    driver: sim
    poll: 200ms
    topic: "plant/{device}/{point}"
    points:
      - {name: temperature, sim: constant, value: 1234.5, unit: "°C", valid: {min: 0, max: 400}}
      - {name: pressure, sim: constant, value: 1.5, valid: {max: 10}}
`
	g := startGW(t, t.TempDir(), cfg)
	s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "plant/#")
	eventually(t, 10*time.Second, "readings", func() bool {
		return hasPrefix(s, `plant/boiler/temperature {"value":1234.5,"unit":"°C","ts":"`) && hasPrefix(s, `plant/boiler/pressure {"value":1.5,`)
	})
	for _, l := range s.snapshot() {
		switch {
		case strings.HasPrefix(l, "plant/boiler/temperature ") && !strings.HasSuffix(l, `"quality":"bad"}`):
			t.Errorf("out of range, not marked bad: %s", l)
		case strings.HasPrefix(l, "plant/boiler/pressure ") && strings.Contains(l, `"quality":"bad"`):
			t.Errorf("in range, marked: %s", l)
		}
	}
	eventually(t, 10*time.Second, "counted", func() bool {
		return strings.Contains(g.metrics(t), `fieldgate_device_implausible_readings_total{device="boiler",driver="sim"} `) &&
			!strings.Contains(g.metrics(t), `fieldgate_device_implausible_readings_total{device="boiler",driver="sim"} 0`)
	})
	log := strings.ReplaceAll(g.log.String(), `\"`, `"`)
	want := `msg="reading outside the point's valid range, published with quality bad: check table, address, type, order and scale" component=devices device=boiler point=temperature value=1234.5 valid=0..400`
	if !strings.Contains(log, want) || strings.Count(log, "outside the point's valid range") != 1 {
		t.Errorf("want %q once in:\n%s", want, log)
	}
}

// fieldgate probe prints the YAML point line to paste for the
// interpretation closest to --expect.
func TestProbePrintsPointLine(t *testing.T) {
	tcpPort := freePort(t)
	startSlave(t, "tcp", fmt.Sprint(tcpPort))
	out, errOut, code := runBin(t, "", "probe", "--address", fmt.Sprintf("127.0.0.1:%d", tcpPort), "--register", "100", "--count", "2", "--expect", "21.5")
	want := "point line to paste under the device's points: (closest: @100 float32 CDAB = 21.5)\n      - {name: value_100, table: holding, address: 100, type: float32, order: CDAB}\n"
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("exit %d, want %q in:\n%s%s", code, want, out, errOut)
	}
	out, _, _ = runBin(t, "", "probe", "--address", fmt.Sprintf("127.0.0.1:%d", tcpPort), "--register", "200", "--count", "1")
	if !strings.Contains(out, "give --expect <value> to get the point line to paste") {
		t.Errorf("no hint without --expect:\n%s", out)
	}
}
