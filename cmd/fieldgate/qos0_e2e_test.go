package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A route written with `qos: 0` is QoS 0, not the default 1 (issue 15):
// the forward route sends at QoS 0 to a real mosquitto upstream and writes
// nothing to the buffer on disk; the subscribe route subscribes upstream
// at QoS 0. Likewise `keepalive: 0s` connects with keep alive off.
func TestQoS0Routes(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	up := startMosquitto(t, 0, "log_dest stderr", "log_type all")
	// The upstream subscriber asks for QoS 2: what it gets is what the
	// bridge published with. -F prints "topic qos payload".
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "2", "-F", "%t %q %p", "-t", "sites/#")
	time.Sleep(300 * time.Millisecond)
	dir := t.TempDir()
	g := startGW(t, dir, fmt.Sprintf(anonHeader+`bridge:
  upstream: {url: "mqtt://127.0.0.1:%d", protocol: 5, keepalive: 0s}
  forward:
    - {filter: "myhome/#", prefix: "sites/{gateway}/", qos: 0}
  subscribe:
    - {filter: "sites/{gateway}/cmd/#", strip_prefix: "sites/{gateway}/cmd/", qos: 0}
`, up.port))

	// The bridge's subscription, as mosquitto logged it: "<client> <qos> <filter>".
	subLine := regexp.MustCompile(`\be2e (\d) sites/e2e/cmd/#`)
	var subQoS string
	eventually(t, 10*time.Second, "the bridge's upstream subscription in mosquitto's log", func() bool {
		m := subLine.FindStringSubmatch(up.log.String())
		if m != nil {
			subQoS = m[1]
		}
		return m != nil
	})
	if subQoS != "0" {
		t.Errorf("subscribe route with qos: 0 subscribed upstream at QoS %s", subQoS)
	}
	// mosquitto: "New client connected from … as e2e (p5, c1, k0)."
	if m := regexp.MustCompile(`as e2e \(p\d, c\d, k(\d+)\)`).FindStringSubmatch(up.log.String()); m == nil || m[1] != "0" {
		t.Errorf("keepalive: 0s: the bridge connected with %v, want k0", m)
	}

	// Local publishers at QoS 1 and 2: upstream gets QoS 0.
	const marker = "qos0-route-marker-7f3a"
	i := 0
	eventually(t, 10*time.Second, "forwarded messages upstream", func() bool {
		i++
		for _, q := range []string{"1", "2"} {
			if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", q, "-t", "myhome/q"+q, "-m", fmt.Sprintf("%s-%d", marker, i)); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		time.Sleep(50 * time.Millisecond)
		n := 0
		for _, l := range upSub.snapshot() {
			if strings.HasPrefix(l, "sites/e2e/myhome/q") {
				n++
			}
		}
		return n >= 2
	})
	for _, l := range upSub.snapshot() {
		f := strings.Fields(l)
		if len(f) != 3 || !strings.HasPrefix(f[0], "sites/e2e/myhome/") {
			continue
		}
		if f[1] != "0" {
			t.Errorf("upstream received %s at QoS %s, want 0 (route qos: 0)", f[0], f[1])
		}
	}
	// Nothing reached the buffer: no record appended, no fsync, and the
	// payloads are in none of its files.
	m := g.metrics(t)
	for _, name := range []string{"fieldgate_buffer_appended_total", "fieldgate_buffer_fsyncs_total"} {
		if !strings.Contains(m, "\n"+name+" 0\n") {
			t.Errorf("%s is not 0:\n%s", name, grepLines(m, name))
		}
	}
	bufDir := filepath.Join(dir, "data", "buffer")
	err := filepath.WalkDir(bufDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("a QoS 0 route's message was written to the buffer: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g.stop()
}

func grepLines(text, prefix string) string {
	var out []string
	for l := range strings.Lines(text) {
		if strings.HasPrefix(l, prefix) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}
