package devices

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pathsOf returns "path: msg" of every FieldError in err, sorted.
func pathsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v is not a *FieldError", e)
		}
		out = append(out, fe.Path)
	}
	walk(err)
	slices.Sort(out)
	return out
}

type modbusValidator struct{ fakeDriver }

func (m *modbusValidator) ValidateDevice(cfg *DeviceConfig) []*FieldError {
	var errs []*FieldError
	for i, p := range cfg.Points {
		if p.Address == nil {
			errs = append(errs, &FieldError{Path: "points[" + string(rune('0'+i)) + "].address", Msg: "required"})
		}
	}
	return errs
}

func testDrivers() map[string]Driver {
	ser := newFakeDriver()
	ser.noWrite = true
	return map[string]Driver{"modbus": &modbusValidator{}, "serial": ser, "sim": newFakeDriver()}
}

func f64(v float64) *float64 { return &v }
func iptr(v int) *int        { return &v }

func TestValidateOK(t *testing.T) {
	cfgs := []DeviceConfig{
		{Name: "boiler", Driver: "modbus", Transport: "tcp", Address: "127.0.0.1:502", Topic: "myhome/groundfloor/{device}/{point}",
			Points: []PointConfig{{Name: "temperature", Table: "holding", Address: iptr(100), Type: "float32", Deadband: 0.2},
				{Name: "setpoint", Table: "holding", Address: iptr(200), Type: "uint16", Scale: f64(0.1), Writable: true, Min: f64(5), Max: f64(80)}}},
		{Name: "weather", Driver: "serial", Port: "/dev/ttyACM0", Baud: 115200, Request: "READ\r\n",
			Parse: &ParseConfig{Regex: `^T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+)$`},
			Topic: "myhome/garden/{device}/{point}", Points: []PointConfig{{Name: "temperature"}, {Name: "humidity"}}},
		{Name: "demo", Driver: "sim", Topic: "{site}/livingroom/{device}/{point}", Vars: map[string]string{"site": "myhome"},
			Points: []PointConfig{{Name: "temperature", Sim: "sine", Min: f64(18), Max: f64(24), Period: 10 * time.Minute},
				{Name: "door", Sim: "toggle"}, {Name: "n", Sim: "counter"}, {Name: "c", Sim: "constant", Value: f64(3), Writable: true},
				{Name: "w", Sim: "random", Min: f64(0), Max: f64(1)}}},
	}
	if err := Validate(cfgs, testDrivers()); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfgs[2].Points[4].Step != nil || cfgs[0].QoS != nil {
		t.Error("Validate modified the caller's config")
	}
}

func TestValidateReportsEverything(t *testing.T) {
	cfgs := []DeviceConfig{
		{Name: "bad name", Driver: "nope", Poll: -time.Second, QoS: iptr(3), Payload: "xml",
			Topic: "a/{device}/{pont}", Points: []PointConfig{{Name: "x"}}},
		{Name: "dup", Driver: "modbus", Topic: "{point}",
			Points: []PointConfig{{Name: "a", Address: iptr(1), Deadband: -1, Scale: f64(0)}, {Name: "a", Address: iptr(2), Min: f64(5), Max: f64(1)}, {Name: "b"}}},
		{Name: "dup", Driver: "serial", Port: "/dev/ttyUSB0", Parse: &ParseConfig{Regex: `(?P<t>[0-9]+) (?P<extra>x)`, KV: true},
			Points: []PointConfig{{Name: "t", Writable: true, Sim: "sine"}, {Name: "h"}}},
		{Name: "s", Driver: "serial", Parse: &ParseConfig{Regex: `(`}, Points: []PointConfig{{Name: "p"}}},
		{Name: "sim1", Driver: "sim", Port: "/dev/x", Request: "R",
			Points: []PointConfig{{Name: "a"}, {Name: "b", Sim: "wave"}, {Name: "c", Sim: "sine", Min: f64(1)}, {Name: "d", Sim: "constant", Table: "coil"},
				{Name: "e", Sim: "counter", QoS: iptr(-1), Topic: "x/#/{point}"}}},
		{Driver: "sim", Topic: "t/{device}/{point}", Vars: map[string]string{"device": "x", "bad-name": "y", "ok": "a+b"}},
	}
	got := pathsOf(t, Validate(cfgs, testDrivers()))
	// The gateway applies Defaults before Validate: same verdict.
	defaulted := slices.Clone(cfgs)
	for i := range defaulted {
		defaulted[i].Defaults()
	}
	if diff := cmp.Diff(got, pathsOf(t, Validate(defaulted, testDrivers()))); diff != "" {
		t.Errorf("defaulted config reports differently (-raw +defaulted):\n%s", diff)
	}
	want := []string{
		"[0].driver", "[0].name", "[0].payload", "[0].poll", "[0].qos", "[0].topic",
		"[1].points[0].deadband", "[1].points[0].scale", "[1].points[1].max", "[1].points[1].name",
		"[1].points[2].address", // from the driver's ValidateDevice, prefixed
		"[1].topic",
		"[2].name", "[2].parse", "[2].parse.regex", "[2].points[0].sim", "[2].points[0].writable", "[2].points[1].name",
		"[3].parse.regex", "[3].port",
		"[4].points[0].sim", "[4].points[1].sim", "[4].points[2].max", "[4].points[3].table", "[4].points[3].value",
		"[4].points[4].qos", "[4].points[4].topic", "[4].port", "[4].request",
		"[5].name", "[5].points", "[5].vars.bad-name", "[5].vars.device", "[5].vars.ok",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("paths (-want +got):\n%s\nfull error:\n%v", diff, Validate(cfgs, testDrivers()))
	}
}

func TestValidateMessages(t *testing.T) {
	cfgs := []DeviceConfig{{Name: "d", Driver: "sim", Topic: "a/{device}/{pont}", Points: []PointConfig{{Name: "p", Sim: "toggle"}}}}
	err := Validate(cfgs, testDrivers())
	if err == nil || !strings.Contains(err.Error(), "[0].topic: \"a/{device}/{pont}\": unknown variable {pont}") {
		t.Fatalf("error = %v, want the unknown variable named with its path", err)
	}
}

func TestValidateTopicCollisions(t *testing.T) {
	cfgs := []DeviceConfig{{Name: "d", Driver: "sim", Topic: "a/{device}/{point}",
		Points: []PointConfig{{Name: "availability", Sim: "toggle"}, {Name: "q", Sim: "toggle", Topic: "a/d/availability"}}}}
	got := pathsOf(t, Validate(cfgs, testDrivers()))
	if diff := cmp.Diff([]string{"[0].points[0].topic", "[0].points[1].topic"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDefaults(t *testing.T) {
	c := DeviceConfig{Name: "d", Driver: "sim", QoS: iptr(2), Heartbeat: time.Minute,
		Points: []PointConfig{{Name: "a", Sim: "sine"}, {Name: "b", Sim: "counter", Poll: 3 * time.Second, QoS: iptr(0), Topic: "x/y"}}}
	orig := c.Points
	c.Defaults()
	if c.Poll != DefaultSimPoll || c.Timeout != DefaultTimeout || *c.Retries != 1 || c.Payload != "json" || c.Topic != DefaultTopic {
		t.Errorf("device defaults: %+v", c)
	}
	a, b := c.Points[0], c.Points[1]
	if a.Poll != time.Second || *a.QoS != 2 || *a.Retain || a.Topic != DefaultTopic || *a.Heartbeat != time.Minute || a.Period != time.Minute {
		t.Errorf("point a defaults: %+v", a)
	}
	if b.Poll != 3*time.Second || *b.QoS != 0 || b.Topic != "x/y" || *b.Value != 0 || *b.Step != 1 {
		t.Errorf("point b defaults: %+v", b)
	}
	if orig[0].QoS != nil || orig[0].Period != 0 {
		t.Error("Defaults wrote into the original points slice")
	}
	s := DeviceConfig{Driver: "serial", Port: "/dev/x"}
	s.Defaults()
	if s.Terminator != "\n" || s.MaxLineLength != 1024 || s.Baud != 9600 || s.DataBits != 8 || s.Parity != "N" || s.StopBits != 1 {
		t.Errorf("serial defaults: %+v", s)
	}
}
