package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// haMsg is one message seen by a mosquitto_sub started with haSubFormat.
type haMsg struct {
	retained bool
	topic    string
	payload  string
}

// haSubFormat prints "<retain flag> <topic> <payload>" per message, so an
// empty (clearing) payload and a retained replay are both visible.
const haSubFormat = "%r %t %p"

func haMsgs(s *sub) []haMsg {
	var out []haMsg
	for _, l := range s.snapshot() {
		r, rest, _ := strings.Cut(l, " ")
		topic, payload, _ := strings.Cut(rest, " ")
		out = append(out, haMsg{retained: r == "1", topic: topic, payload: payload})
	}
	return out
}

// haConfigs returns the messages on discovery config topics.
func haConfigs(s *sub) []haMsg {
	var out []haMsg
	for _, m := range haMsgs(s) {
		if strings.HasSuffix(m.topic, "/config") {
			out = append(out, m)
		}
	}
	return out
}

// haEntity decodes the last non-empty config seen on topic.
func haEntity(t *testing.T, s *sub, topic string) map[string]any {
	t.Helper()
	var last string
	for _, m := range haMsgs(s) {
		if m.topic == topic && m.payload != "" {
			last = m.payload
		}
	}
	if last == "" {
		t.Fatalf("no discovery config on %s; saw %q", topic, s.snapshot())
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(last), &e); err != nil {
		t.Fatalf("%s: %v: %s", topic, err, last)
	}
	return e
}

// latestValue is the "value" of the last JSON reading on topic.
func latestValue(s *sub, topic string) (string, bool) {
	lines := s.snapshot()
	for i := len(lines) - 1; i >= 0; i-- {
		if p, ok := strings.CutPrefix(lines[i], topic+" "); ok {
			var r struct {
				Value any `json:"value"`
			}
			if json.Unmarshal([]byte(p), &r) == nil && r.Value != nil {
				return fmt.Sprint(r.Value), true
			}
		}
	}
	return "", false
}

const haBoiler = `  - name: boiler
    driver: modbus
    transport: tcp
    address: 127.0.0.1:%d
    unit: 1
    poll: 200ms
    manufacturer: Acme
    model: B-200
    topic: "plant/{device}/{point}"
    points:
      - {name: temperature, table: holding, address: 100, type: float32, order: CDAB, unit: "°C"}
      - {name: pump, table: coil, address: 0, type: bool, writable: true}
      - {name: setpoint, table: holding, address: 200, type: uint16, scale: 0.1, writable: true, min: 5, max: 80, unit: "°C"}
`

// Home Assistant on the gateway's broker: the retained discovery configs
// (gateway device, via_device, origin, availability), a number entity's
// command through /set to a pymodbus register, a point removed by SIGHUP
// cleared with an empty retained message, everything re-sent when Home
// Assistant announces itself, nothing re-sent per poll, and the gateway's
// availability "offline" at stop.
func TestHomeAssistantLocal(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	tcpPort := freePort(t)
	startSlave(t, "tcp", fmt.Sprint(tcpPort))
	withMeter := fmt.Sprintf(anonHeader+`integrations:
  homeassistant: {}
devices:
`+haBoiler+`  - name: meter
    driver: sim
    poll: 200ms
    topic: "plant/{device}/{point}"
    points:
      - {name: energy, sim: counter, value: 1000, step: 1, unit: kWh}
      - {name: power, sim: constant, value: 230, unit: W}
`, tcpPort)
	dir := t.TempDir()
	g := startGW(t, dir, withMeter)
	port := fmt.Sprint(g.mqttPort)
	// Subscribe once discovery is out, so every config arrives retained.
	eventually(t, 10*time.Second, "discovery sent", func() bool { return strings.Contains(g.log.String(), "Home Assistant discovery sent") })
	s := startSub(t, "-h", "127.0.0.1", "-p", port, "-F", haSubFormat, "-t", "homeassistant/#", "-t", "e2e/status")
	const (
		number = "homeassistant/number/e2e/boiler_setpoint/config"
		energy = "homeassistant/sensor/e2e/meter_energy/config"
		power  = "homeassistant/sensor/e2e/meter_power/config"
	)
	want := []string{
		"homeassistant/binary_sensor/e2e/status/config",
		"homeassistant/sensor/e2e/boiler_temperature/config",
		"homeassistant/switch/e2e/boiler_pump/config",
		number, energy, power,
	}
	eventually(t, 10*time.Second, "retained discovery configs", func() bool { return len(haConfigs(s)) >= len(want) })
	var got []string
	for _, m := range haConfigs(s) {
		if !m.retained {
			t.Errorf("%s arrived as a live message to a new subscriber: not retained", m.topic)
		}
		got = append(got, m.topic)
	}
	slices.Sort(got)
	if w := slices.Sorted(slices.Values(want)); !slices.Equal(got, w) {
		t.Fatalf("configs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(w, "\n"))
	}
	if !s.has("1 e2e/status online") {
		t.Errorf("gateway availability not retained online: %q", s.snapshot())
	}

	// The number entity, field by field where it matters.
	e := haEntity(t, s, number)
	dev, _ := e["device"].(map[string]any)
	orig, _ := e["origin"].(map[string]any)
	avail, _ := e["availability"].([]any)
	checks := map[string][2]any{
		"command_topic":     {e["command_topic"], "plant/boiler/setpoint/set"},
		"state_topic":       {e["state_topic"], "plant/boiler/setpoint"},
		"unique_id":         {e["unique_id"], "fieldgate_e2e_boiler_setpoint"},
		"min":               {e["min"], 5.0},
		"max":               {e["max"], 80.0},
		"step":              {e["step"], 0.1},
		"availability_mode": {e["availability_mode"], "all"},
		"availability":      {len(avail), 2},
		"device.via_device": {dev["via_device"], "fieldgate_e2e"},
		"device.model":      {dev["model"], "B-200"},
		"origin.name":       {orig["name"], "fieldgate"},
	}
	for k, c := range checks {
		if fmt.Sprint(c[0]) != fmt.Sprint(c[1]) {
			t.Errorf("number %s = %v, want %v", k, c[0], c[1])
		}
	}
	if en := haEntity(t, s, energy); en["device_class"] != "energy" || en["state_class"] != "total_increasing" || en["unit_of_measurement"] != "kWh" {
		t.Errorf("energy entity not fit for the Energy dashboard: %v", en)
	}

	// Home Assistant sets the number: the command goes through /set to the
	// pymodbus register and comes back as the read-back value.
	vals := startSub(t, "-h", "127.0.0.1", "-p", port, "-t", "plant/boiler/setpoint")
	eventually(t, 10*time.Second, "setpoint 45", func() bool { v, ok := latestValue(vals, "plant/boiler/setpoint"); return ok && v == "45" })
	if out, err := mosqPub("-h", "127.0.0.1", "-p", port, "-q", "1", "-t", e["command_topic"].(string), "-m", "62.5"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "setpoint 62.5 read back from pymodbus", func() bool {
		v, ok := latestValue(vals, "plant/boiler/setpoint")
		return ok && v == "62.5"
	})

	// Polls go on; discovery is not repeated.
	before := len(haConfigs(s))
	time.Sleep(time.Second)
	if n := len(haConfigs(s)); n != before {
		t.Errorf("%d discovery messages sent while only polling", n-before)
	}

	// Home Assistant (re)starts: every config is sent again.
	if out, err := mosqPub("-h", "127.0.0.1", "-p", port, "-t", "homeassistant/status", "-m", "online"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "discovery re-sent after homeassistant/status online", func() bool {
		return len(haConfigs(s)) >= before+len(want)
	})
	for _, m := range haConfigs(s)[before:] {
		if m.retained || m.payload == "" {
			t.Errorf("re-sent %s: retained flag %v (live delivery expected), payload %q", m.topic, m.retained, m.payload)
		}
	}

	// SIGHUP after removing the power point: its config is cleared.
	before = len(haConfigs(s))
	withoutPower := strings.Replace(withMeter, "      - {name: power, sim: constant, value: 230, unit: W}\n", "", 1)
	writeConfig(t, dir, withoutPower, g.mqttPort, g.httpPort)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "power config cleared", func() bool {
		for _, m := range haConfigs(s)[before:] {
			if m.topic == power && m.payload == "" {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	if extra := haConfigs(s)[before:]; len(extra) != 1 {
		t.Errorf("reload sent %d discovery messages, want only the clear: %v", len(extra), extra)
	}
	// A new subscriber no longer gets it.
	fresh := startSub(t, "-h", "127.0.0.1", "-p", port, "-F", haSubFormat, "-t", "homeassistant/#")
	eventually(t, 10*time.Second, "retained configs after reload", func() bool { return len(haConfigs(fresh)) >= len(want)-1 })
	time.Sleep(300 * time.Millisecond)
	for _, m := range haConfigs(fresh) {
		if m.topic == power {
			t.Errorf("cleared config still retained: %v", m)
		}
	}
	if n := len(haConfigs(fresh)); n != len(want)-1 {
		t.Errorf("%d retained configs after reload, want %d", n, len(want)-1)
	}

	// A reload that changes only Home Assistant keys (the boiler's model)
	// re-sends the boiler's configs and leaves the pollers running: no
	// availability flip.
	availSub := startSub(t, "-h", "127.0.0.1", "-p", port, "-t", "plant/+/availability")
	eventually(t, 10*time.Second, "boiler availability", func() bool { return availSub.has("plant/boiler/availability online") })
	before = len(haConfigs(s))
	writeConfig(t, dir, strings.Replace(withoutPower, "model: B-200", "model: B-300", 1), g.mqttPort, g.httpPort)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "boiler configs re-sent with the new model", func() bool { return len(haConfigs(s)) >= before+3 })
	time.Sleep(300 * time.Millisecond)
	for _, m := range haConfigs(s)[before:] {
		if !strings.Contains(m.topic, "/boiler_") || !strings.Contains(m.payload, `"model":"B-300"`) {
			t.Errorf("model change sent %s %s", m.topic, m.payload)
		}
	}
	if n := len(haConfigs(s)) - before; n != 3 {
		t.Errorf("model change sent %d configs, want the boiler's 3", n)
	}
	if availSub.has("plant/boiler/availability offline") {
		t.Errorf("a Home Assistant-only change restarted the pollers: %q", availSub.snapshot())
	}

	// A clean stop marks the gateway offline (retained).
	g.stop()
	if !s.has("1 e2e/status offline") && !s.has("0 e2e/status offline") {
		t.Errorf("no offline availability at stop: %q", s.snapshot())
	}
	if data, err := os.ReadFile(dir + "/data/homeassistant.json"); err != nil || strings.Contains(string(data), "meter_power") {
		t.Errorf("state file %q (%v) still lists the removed entity", data, err)
	}
}

// Home Assistant on the upstream mosquitto: discovery, state, availability
// and the gateway's status reach it through the forward routes, named as the
// upstream sees them; a number command published upstream comes down a
// subscribe route to /set and the pymodbus register; Home Assistant's birth
// message upstream makes the gateway send discovery again.
func TestHomeAssistantUpstream(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	up := startMosquitto(t, 0)
	upPort := fmt.Sprint(up.port)
	tcpPort := freePort(t)
	startSlave(t, "tcp", fmt.Sprint(tcpPort))
	cfg := fmt.Sprintf(anonHeader+`bridge:
  upstream: {url: "mqtt://127.0.0.1:%d", protocol: 5, client_id: "{gateway}"}
  forward:
    - {filter: "plant/#", prefix: "sites/{gateway}/", qos: 1}
    - {filter: "homeassistant/#", prefix: "", qos: 1}
  subscribe:
    - {filter: "sites/{gateway}/plant/+/+/set", strip_prefix: "sites/{gateway}/", qos: 1}
    - {filter: "homeassistant/status", qos: 1}
integrations:
  homeassistant: {broker: upstream}
devices:
`+haBoiler, up.port, tcpPort)
	g := startGW(t, t.TempDir(), cfg)
	const number = "homeassistant/number/e2e/boiler_setpoint/config"
	eventually(t, 15*time.Second, "discovery sent", func() bool { return strings.Contains(g.log.String(), "Home Assistant discovery sent") })

	// Once the configs are upstream, a subscriber that arrives later gets
	// them retained.
	s := startSub(t, "-h", "127.0.0.1", "-p", upPort, "-F", haSubFormat, "-t", "homeassistant/#", "-t", "sites/#")
	eventually(t, 15*time.Second, "configs upstream", func() bool { return len(haConfigs(s)) >= 4 })
	late := startSub(t, "-h", "127.0.0.1", "-p", upPort, "-F", haSubFormat, "-t", "homeassistant/#")
	eventually(t, 15*time.Second, "retained configs upstream", func() bool {
		n := 0
		for _, m := range haConfigs(late) {
			if m.retained {
				n++
			}
		}
		return n == 4
	})
	e := haEntity(t, s, number)
	avail, _ := e["availability"].([]any)
	var availTopics []string
	for _, a := range avail {
		availTopics = append(availTopics, fmt.Sprint(a.(map[string]any)["topic"]))
	}
	for k, c := range map[string][2]string{
		"state_topic":   {fmt.Sprint(e["state_topic"]), "sites/e2e/plant/boiler/setpoint"},
		"command_topic": {fmt.Sprint(e["command_topic"]), "sites/e2e/plant/boiler/setpoint/set"},
		"availability":  {strings.Join(availTopics, " "), "sites/e2e/status sites/e2e/plant/boiler/availability"},
	} {
		if c[0] != c[1] {
			t.Errorf("upstream number %s = %q, want %q", k, c[0], c[1])
		}
	}
	// Every availability topic named holds "online" upstream.
	for _, topic := range availTopics {
		eventually(t, 10*time.Second, topic+" online upstream", func() bool {
			return s.has("1 "+topic+" online") || s.has("0 "+topic+" online")
		})
	}

	// The number's command, published upstream as Home Assistant would.
	vals := startSub(t, "-h", "127.0.0.1", "-p", upPort, "-t", "sites/e2e/plant/boiler/setpoint")
	eventually(t, 10*time.Second, "setpoint 45 upstream", func() bool {
		v, ok := latestValue(vals, "sites/e2e/plant/boiler/setpoint")
		return ok && v == "45"
	})
	if out, err := mosqPub("-h", "127.0.0.1", "-p", upPort, "-q", "1", "-t", e["command_topic"].(string), "-m", "62.5"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 15*time.Second, "setpoint 62.5 read back and forwarded", func() bool {
		v, ok := latestValue(vals, "sites/e2e/plant/boiler/setpoint")
		return ok && v == "62.5"
	})

	// Home Assistant's birth message upstream: discovery again.
	before := len(haConfigs(s))
	if out, err := mosqPub("-h", "127.0.0.1", "-p", upPort, "-q", "1", "-t", "homeassistant/status", "-m", "online"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 15*time.Second, "discovery re-sent upstream", func() bool { return len(haConfigs(s)) >= before+4 })

	// SIGHUP after removing the pump: its config is cleared upstream too.
	const pump = "homeassistant/switch/e2e/boiler_pump/config"
	writeConfig(t, g.dir, strings.Replace(cfg, "      - {name: pump, table: coil, address: 0, type: bool, writable: true}\n", "", 1), g.mqttPort, g.httpPort)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "pump config cleared upstream", func() bool {
		for _, m := range haConfigs(s) {
			if m.topic == pump && m.payload == "" {
				return true
			}
		}
		return false
	})
	fresh := startSub(t, "-h", "127.0.0.1", "-p", upPort, "-F", haSubFormat, "-t", "homeassistant/#")
	eventually(t, 10*time.Second, "retained configs upstream after reload", func() bool { return len(haConfigs(fresh)) >= 3 })
	time.Sleep(300 * time.Millisecond)
	for _, m := range haConfigs(fresh) {
		if m.topic == pump {
			t.Errorf("cleared config still retained upstream: %v", m)
		}
	}
	g.stop()
}

// `fieldgate check` refuses a Home Assistant target that no route carries,
// naming the key, its line and the missing topic, and accepts the file once
// the routes are there.
func TestHomeAssistantCheck(t *testing.T) {
	dir := t.TempDir()
	body := `gateway: {id: gw}
integrations:
  homeassistant: {broker: upstream}
bridge:
  upstream: {url: "mqtt://127.0.0.1:1"}
  forward: [{filter: "plant/#", prefix: "sites/{gateway}/"}]
  subscribe: [{filter: "homeassistant/status"}]
devices:
  - {name: tank, driver: sim, topic: "plant/{device}/{point}", points: [{name: level, sim: constant, value: 3, unit: "m³"}]}
`
	path := writeConfig(t, dir, body, 0, 0)
	_, errOut, code := runBin(t, "", "check", "--config", path)
	want := `integrations.homeassistant.broker (line 3): upstream: discovery topic "homeassistant/sensor/gw/tank_level/config" is not carried by any bridge.forward route`
	if code != exitConfig || !strings.Contains(errOut, want) {
		t.Fatalf("check: exit %d, want %d with %q:\n%s", code, exitConfig, want, errOut)
	}
	path = writeConfig(t, dir, strings.Replace(body, `forward: [{filter: "plant/#", prefix: "sites/{gateway}/"}]`,
		`forward: [{filter: "plant/#", prefix: "sites/{gateway}/"}, {filter: "homeassistant/#", prefix: ""}]`, 1), 0, 0)
	out, errOut, code := runBin(t, "", "check", "--config", path)
	if code != exitOK || !strings.Contains(out, "Home Assistant discovery on the upstream broker") {
		t.Fatalf("check with the route: exit %d\n%s%s", code, out, errOut)
	}
}
