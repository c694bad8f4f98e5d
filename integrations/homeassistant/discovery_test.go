package homeassistant

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

func TestDeriveClass(t *testing.T) {
	tests := []struct {
		unit, name string
		want       unitClass
	}{
		{"°C", "temperature", unitClass{"temperature", "measurement"}},
		{"°F", "outside", unitClass{"temperature", "measurement"}},
		{"K", "t", unitClass{"temperature", "measurement"}},
		{"W", "p", unitClass{"power", "measurement"}},
		{"kW", "p", unitClass{"power", "measurement"}},
		{"Wh", "e", unitClass{"energy", "total_increasing"}},
		{"kWh", "e", unitClass{"energy", "total_increasing"}},
		{"MWh", "e", unitClass{"energy", "total_increasing"}},
		{"V", "u", unitClass{"voltage", "measurement"}},
		{"A", "i", unitClass{"current", "measurement"}},
		{"Hz", "f", unitClass{"frequency", "measurement"}},
		{"%", "humidity", unitClass{"humidity", "measurement"}},
		{"%", "rh_garden", unitClass{"humidity", "measurement"}},
		{"%", "hum", unitClass{"humidity", "measurement"}},
		{"%", "overheat", unitClass{"", "measurement"}}, // "rh" inside a word is not relative humidity
		{"%", "pf_l1", unitClass{"power_factor", "measurement"}},
		{"%", "power_factor", unitClass{"power_factor", "measurement"}},
		{"%", "battery", unitClass{"battery", "measurement"}},
		{"%", "valve_opening", unitClass{"", "measurement"}},
		{"m³", "gas", unitClass{"gas", "total_increasing"}},
		{"m³", "cold_water", unitClass{"water", "total_increasing"}},
		{"m³", "volume", unitClass{"volume", "total_increasing"}},
		{"L", "gas", unitClass{"volume", "total_increasing"}}, // gas is not measured in litres
		{"m³/h", "flow", unitClass{"volume_flow_rate", "measurement"}},
		{"bar", "p", unitClass{"pressure", "measurement"}},
		{"ppm", "co2", unitClass{"", "measurement"}},
		{"µg/m³", "pm25", unitClass{"pm25", "measurement"}},
		{"ug/m3", "pm10_outdoor", unitClass{"pm10", "measurement"}},
		{"µg/m³", "dust", unitClass{"", "measurement"}},
		{"", "count", unitClass{"", "measurement"}},
	}
	for _, tt := range tests {
		if got := deriveClass(normUnit(tt.unit), tt.name); got != tt.want {
			t.Errorf("deriveClass(%q, %q) = %+v, want %+v", tt.unit, tt.name, got, tt.want)
		}
	}
	if got := normUnit("degC"); got != "°C" {
		t.Errorf("normUnit(degC) = %q", got)
	}
	if got := normUnit("%RH"); got != "%" {
		t.Errorf("normUnit(%%RH) = %q", got)
	}
	if got := normUnit("MW"); got != "MW" {
		t.Errorf("normUnit(MW) = %q: units are case-sensitive", got)
	}
}

// newDevice compiles a device by hand (the driver packages are out of
// reach here): topics as devices.New would expand "site/{device}/{point}".
func newDevice(cfg devices.DeviceConfig) *devices.Device {
	cfg.Defaults()
	d := &devices.Device{Config: cfg, AvailabilityTopic: "site/" + cfg.Name + "/availability"}
	for i := range cfg.Points {
		d.Points = append(d.Points, &devices.Point{Config: cfg.Points[i], Device: d, Index: i, Topic: "site/" + cfg.Name + "/" + cfg.Points[i].Name})
	}
	return d
}

func ptr[T any](v T) *T { return &v }

func defaulted(c Config) Config {
	c.Defaults()
	return c
}

func problems(err error) []string {
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, fe.Path+": "+fe.Msg)
		}
	}
	return out
}

func TestBuildProblems(t *testing.T) {
	dev := newDevice(devices.DeviceConfig{Name: "boiler", Driver: "modbus", Points: []devices.PointConfig{
		{Name: "t", Type: "float32", Table: "holding", Unit: "°C", HomeAssistant: &devices.HomeAssistantPoint{DeviceClass: "warmth"}},
		{Name: "e", Type: "float32", Table: "input", Unit: "kWh", HomeAssistant: &devices.HomeAssistantPoint{StateClass: "measurement"}},
		{Name: "sp", Type: "float32", Table: "holding", Writable: true},
		{Name: "flag", Type: "bool", Table: "coil", HomeAssistant: &devices.HomeAssistantPoint{Component: "switch"}},
		{Name: "x", Type: "uint16", Table: "holding", Writable: true, HomeAssistant: &devices.HomeAssistantPoint{Step: ptr(0.0001), Mode: "dial"}},
	}})
	_, err := Build(defaulted(Config{}), []*devices.Device{dev}, Options{Gateway: "gw", Availability: "gw/status"})
	want := []string{
		`devices[0].points[0].homeassistant.device_class: "warmth" is not a Home Assistant sensor device class`,
		"devices[0].points[1].homeassistant.state_class: device_class energy needs state_class total or total_increasing (Home Assistant refuses measurement, and the Energy dashboard lists only totals)",
		"devices[0].points[2]: a writable float32 point needs min and max for its Home Assistant number entity",
		"devices[0].points[3].homeassistant.component: switch needs a writable bool point",
		"devices[0].points[4].homeassistant.step: 0.0001: Home Assistant's smallest step is 0.001",
		`devices[0].points[4].homeassistant.mode: "dial": want auto, box or slider`,
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// A device "a_b" with point "c" and a device "a" with point "b_c" would
// share an object id: reported, not silently overwritten.
func TestBuildObjectIDCollision(t *testing.T) {
	d1 := newDevice(devices.DeviceConfig{Name: "a_b", Driver: "sim", Points: []devices.PointConfig{{Name: "c", Sim: "constant"}}})
	d2 := newDevice(devices.DeviceConfig{Name: "a", Driver: "sim", Points: []devices.PointConfig{{Name: "b_c", Sim: "constant"}}})
	_, err := Build(defaulted(Config{}), []*devices.Device{d1, d2}, Options{Gateway: "gw", Availability: "gw/status"})
	if err == nil || !strings.Contains(err.Error(), `devices[1].points[0]: Home Assistant object id "a_b_c" is also used by devices[0].points[0]`) {
		t.Errorf("collision not reported: %v", err)
	}
}

// routes is a Topics that carries only what it lists.
type routes struct{ state, command, publish, receive map[string]string }

func (r routes) State(t string) (string, bool)   { v, ok := r.state[t]; return v, ok }
func (r routes) Command(t string) (string, bool) { v, ok := r.command[t]; return v, ok }
func (r routes) Publish(t string) (string, bool) { v, ok := r.publish[t]; return v, ok }
func (r routes) Receive(t string) (string, bool) { v, ok := r.receive[t]; return v, ok }

// Upstream: every topic that no route carries is a problem, named.
func TestBuildUpstreamUncarried(t *testing.T) {
	dev := newDevice(devices.DeviceConfig{Name: "boiler", Driver: "modbus", Points: []devices.PointConfig{
		{Name: "sp", Type: "uint16", Table: "holding", Writable: true, Min: ptr(5.0), Max: ptr(80.0)},
	}})
	_, err := Build(defaulted(Config{Broker: BrokerUpstream}), []*devices.Device{dev}, Options{Gateway: "gw", Availability: "sites/gw/status", Topics: routes{}})
	want := []string{
		`integrations.homeassistant.status_topic: "homeassistant/status": no bridge.subscribe route brings Home Assistant's status messages down to the gateway (add a route whose filter matches it)`,
		`integrations.homeassistant.broker: upstream: discovery topic "homeassistant/binary_sensor/gw/status/config" is not carried by any bridge.forward route (add one whose prefix and filter produce it, e.g. {filter: "homeassistant/#", prefix: ""})`,
		`devices[0]: availability topic "site/boiler/availability" is not carried upstream by any bridge.forward route (integrations.homeassistant.broker is upstream)`,
		`devices[0].points[0]: topic "site/boiler/sp" is not carried upstream by any bridge.forward route (integrations.homeassistant.broker is upstream)`,
		`devices[0].points[0]: write topic "site/boiler/sp/set" cannot be reached from upstream: no bridge.subscribe route delivers a topic there (integrations.homeassistant.broker is upstream; homeassistant: {component: sensor} makes the entity read-only)`,
		`integrations.homeassistant.broker: upstream: discovery topic "homeassistant/number/gw/boiler_sp/config" is not carried by any bridge.forward route (add one whose prefix and filter produce it, e.g. {filter: "homeassistant/#", prefix: ""})`,
	}
	if diff := cmp.Diff(want, problems(err)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// A bad-quality JSON reading renders "None" (unknown in Home Assistant),
// never a number; payload: value points get no template.
func TestValueTemplates(t *testing.T) {
	mk := func(payload string) *devices.Device {
		return newDevice(devices.DeviceConfig{Name: "d", Driver: "modbus", Payload: payload, Points: []devices.PointConfig{
			{Name: "t", Type: "int16", Table: "input", Unit: "°C"},
			{Name: "b", Type: "bool", Table: "discrete"},
		}})
	}
	for _, tt := range []struct {
		payload      string
		number, bool string
	}{
		{"json", valueTemplate, boolTemplate(true)},
		{"value", "", ""},
	} {
		plan, err := Build(defaulted(Config{}), []*devices.Device{mk(tt.payload)}, Options{Gateway: "gw", Availability: "gw/status"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range plan.Messages[1:] {
			var e struct {
				ValueTemplate string `json:"value_template"`
			}
			if err := json.Unmarshal(m.Payload, &e); err != nil {
				t.Fatal(err)
			}
			got = append(got, e.ValueTemplate)
		}
		if diff := cmp.Diff([]string{tt.number, tt.bool}, got); diff != "" {
			t.Errorf("payload %s: templates (-want +got):\n%s", tt.payload, diff)
		}
	}
	if !strings.Contains(valueTemplate, "value_json.value is defined") || !strings.Contains(valueTemplate, "None") {
		t.Errorf("value template %q does not guard bad readings", valueTemplate)
	}
}

// A unit that spells relative humidity ("%RH") becomes Home Assistant's
// humidity in "%", whatever the point is called.
func TestRelativeHumidityUnit(t *testing.T) {
	dev := newDevice(devices.DeviceConfig{Name: "climate", Driver: "serial", Points: []devices.PointConfig{{Name: "h", Unit: "%RH"}}})
	plan, err := Build(defaulted(Config{}), []*devices.Device{dev}, Options{Gateway: "gw", Availability: "gw/status"})
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		DeviceClass string `json:"device_class"`
		StateClass  string `json:"state_class"`
		Unit        string `json:"unit_of_measurement"`
	}
	if err := json.Unmarshal(plan.Messages[1].Payload, &e); err != nil {
		t.Fatal(err)
	}
	if e.DeviceClass != "humidity" || e.StateClass != "measurement" || e.Unit != "%" {
		t.Errorf("%%RH point: %+v", e)
	}
}
