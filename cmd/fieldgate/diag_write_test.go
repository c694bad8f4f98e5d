package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Write-back always answers: a /set to a read-only point, or to a name
// that is no point under a device's topic root, gets {"ok":false,…} on
// /set/result and a log line.
func TestWriteBackAlwaysAnswers(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	raw, err := os.ReadFile("../../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReplacer(
		"127.0.0.1:1883", "127.0.0.1:{{mqtt}}",
		"127.0.0.1:9180", "127.0.0.1:{{http}}",
		"127.0.0.1:1884", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"./data", "{{data}}",
	).Replace(string(raw))
	g := startGW(t, t.TempDir(), body)
	port := fmt.Sprint(g.mqttPort)
	s := startSub(t, "-h", "127.0.0.1", "-p", port, "-t", "myhome/groundfloor/boiler/+/set/result")
	for _, c := range []struct{ point, result, log string }{
		{"temperature", `{"ok":false,"error":"point temperature of device boiler is read-only (writable: true in its config allows writes)"}`,
			`msg="write rejected" component=devices device=boiler point=temperature topic=myhome/groundfloor/boiler/temperature/set`},
		{"setpiont", `{"ok":false,"error":"device boiler has no point \"setpiont\" (points: temperature, starts, setpoint)"}`,
			`msg="write rejected" component=devices device=boiler point=setpiont topic=myhome/groundfloor/boiler/setpiont/set`},
	} {
		want := "myhome/groundfloor/boiler/" + c.point + "/set/result " + c.result
		eventually(t, 10*time.Second, want, func() bool {
			if out, err := mosqPub("-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "myhome/groundfloor/boiler/"+c.point+"/set", "-m", "50"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			time.Sleep(100 * time.Millisecond)
			return s.has(want)
		})
		if !strings.Contains(g.log.String(), c.log) {
			t.Errorf("no log line %q:\n%s", c.log, g.log.String())
		}
	}
}
