package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A serial sensor whose lines never match says what it received: once at
// warn, "N lines received, none matched (last: `…`)", each skipped line
// quoted at debug. kv parsing maps sensor keys to points with key:.
func TestSerialSaysWhatItSaw(t *testing.T) {
	need(t, "socat", "mosquitto_sub")
	for _, c := range []struct {
		name, parse, points string
		lines               string
		logs                []string
		reading             string
	}{
		{
			name:   "regex that does not match",
			parse:  `{regex: '^T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+)$'}`,
			points: `[{name: temperature}, {name: humidity}]`,
			lines:  "T=21.5;H=40.2\r\n",
			logs: []string{
				"3 lines received, none matched (last: `T=21.5;H=40.2`): check parse.regex against it",
				`msg="line skipped" component=serial device=weather reason="line does not match the parser" line="` + "`T=21.5;H=40.2`" + `"`,
			},
		},
		{
			name:   "kv keys that are not point names",
			parse:  `{kv: true}`,
			points: `[{name: temperature}, {name: humidity}]`,
			lines:  "T=21.5;H=40.2\r\n",
			logs:   []string{"3 lines received, none matched (last: `T=21.5;H=40.2`): kv lines are key=value pairs; keys are point names, or map one with key: on the point"},
		},
		{
			name:    "kv keys mapped to points",
			parse:   `{kv: true}`,
			points:  `[{name: temperature, key: T}, {name: humidity, key: H}]`,
			lines:   "T=21.5;H=40.2\r\n",
			reading: `garden/weather/temperature {"value":21.5`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			startSocat(t, dir)
			header := strings.Replace(anonHeader, "  id: e2e\n", "  id: e2e\n  log: {level: debug}\n", 1)
			cfg := fmt.Sprintf(header+"devices:\n  - name: weather\n    driver: serial\n    port: %s\n    parse: %s\n    topic: \"garden/{device}/{point}\"\n    points: %s\n",
				filepath.Join(dir, "ttyV1"), c.parse, c.points)
			g := startGW(t, dir, cfg)
			s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "garden/#")
			write := func(data string) {
				t.Helper()
				f, err := os.OpenFile(filepath.Join(dir, "ttyV0"), os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString(data); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 15*time.Second, "what the sensor sent, in the log or published", func() bool {
				write(c.lines)
				time.Sleep(50 * time.Millisecond)
				if c.reading != "" {
					return hasPrefix(s, c.reading)
				}
				log := strings.ReplaceAll(g.log.String(), `\"`, `"`)
				for _, w := range c.logs {
					if !strings.Contains(log, w) {
						return false
					}
				}
				return true
			})
			if n := strings.Count(g.log.String(), "none matched"); c.reading == "" && n != 1 {
				t.Errorf("the no-match warning was logged %d times, want once", n)
			}
		})
	}
}
