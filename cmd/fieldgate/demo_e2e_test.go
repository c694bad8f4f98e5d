package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// The README's first run: configs/demo.yaml with simulated devices and an
// upstream that is not there yet. Readings show at once on the local broker,
// are buffered, and drain when an upstream mosquitto appears. Write-back to
// a simulated setpoint is confirmed.
func TestDemoFirstRun(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	raw, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	upPort := freePort(t)
	body := strings.NewReplacer(
		"127.0.0.1:1883", "127.0.0.1:{{mqtt}}",
		"127.0.0.1:9180", "127.0.0.1:{{http}}",
		"127.0.0.1:1884", fmt.Sprintf("127.0.0.1:%d", upPort),
		"./data", "{{data}}",
	).Replace(string(raw))
	g := startGW(t, t.TempDir(), body)

	s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "myhome/#")
	var reading struct {
		Value float64 `json:"value"`
		Unit  string  `json:"unit"`
		TS    string  `json:"ts"`
	}
	eventually(t, 10*time.Second, "a livingroom temperature reading", func() bool {
		for _, l := range s.snapshot() {
			if p, ok := strings.CutPrefix(l, "myhome/livingroom/livingroom/temperature "); ok {
				return json.Unmarshal([]byte(p), &reading) == nil
			}
		}
		return false
	})
	if reading.Value < 18 || reading.Value > 24 || reading.Unit != "°C" {
		t.Errorf("reading %+v outside the simulated 18..24 °C", reading)
	}
	if ts, err := time.Parse(time.RFC3339, reading.TS); err != nil || time.Since(ts) > time.Minute {
		t.Errorf("reading timestamp %q: %v", reading.TS, err)
	}
	eventually(t, 10*time.Second, "availability online (retained)", func() bool {
		return s.has("myhome/livingroom/livingroom/availability online")
	})

	// Write-back: a valid set is confirmed, an out-of-range one refused.
	if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/groundfloor/boiler/setpoint/set", "-m", "65"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "setpoint confirmed at 65", func() bool {
		for _, l := range s.snapshot() {
			if p, ok := strings.CutPrefix(l, "myhome/groundfloor/boiler/setpoint "); ok {
				var v struct{ Value float64 }
				if json.Unmarshal([]byte(p), &v) == nil && v.Value == 65 {
					return true
				}
			}
		}
		return false
	})
	if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/groundfloor/boiler/setpoint/set", "-m", "95"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "out-of-range set refused on the result topic", func() bool {
		for _, l := range s.snapshot() {
			if p, ok := strings.CutPrefix(l, "myhome/groundfloor/boiler/setpoint/set/result "); ok && strings.Contains(p, `"ok":false`) {
				return true
			}
		}
		return false
	})

	// The upstream is absent: readings pile up in the buffer.
	eventually(t, 20*time.Second, "a backlog in the buffer", func() bool {
		return metricValue(g.metrics(t), "fieldgate_buffer_messages") >= 5
	})
	// Start it: the backlog drains and readings arrive upstream.
	if log := g.log.String(); !strings.Contains(log, `msg="upstream unreachable; buffering"`) || !strings.Contains(log, "retry_in=") {
		t.Errorf("the absent upstream is not logged with the next retry delay:\n%s", log)
	}
	up := startMosquitto(t, upPort)
	// The demo's backoff (1s..5s) reconnects within seconds, and says so.
	eventually(t, 10*time.Second, "upstream connected in the log", func() bool {
		return strings.Contains(g.log.String(), `msg="upstream connected"`)
	})
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	eventually(t, 30*time.Second, "readings upstream", func() bool {
		for _, l := range upSub.snapshot() {
			if strings.HasPrefix(l, "sites/demo-gw/myhome/livingroom/livingroom/temperature ") {
				return true
			}
		}
		return false
	})
	eventually(t, 30*time.Second, "backlog drained", func() bool {
		return metricValue(g.metrics(t), "fieldgate_buffer_messages") < 5
	})
	g.stop()
}

// metricValue returns the value of an unlabelled Prometheus sample, or -1.
func metricValue(text, name string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, name+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}
