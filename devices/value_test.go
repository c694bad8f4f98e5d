package devices

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestTemplate(t *testing.T) {
	tests := []struct {
		in, want, root, err string
	}{
		{in: "myhome/groundfloor/{device}/{point}", want: "myhome/groundfloor/boiler/temp", root: "myhome/groundfloor/boiler"},
		{in: "{gateway}/{floor}/{device}-{point}/v", want: "gw/gf/boiler-temp/v", root: "gw/gf"},
		{in: "fixed/topic", want: "fixed/topic"},
		{in: "", err: "empty"},
		{in: "a/{device", err: "unclosed"},
		{in: "a/device}", err: "unbalanced"},
		{in: "a/{dev{ice}}", err: "unclosed"},
		{in: "a/{}", err: "invalid variable"},
		{in: "a/{9x}", err: "invalid variable"},
	}
	vars := map[string]string{"gateway": "gw", "device": "boiler", "point": "temp", "floor": "gf"}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			tm, err := parseTemplate(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lookup := func(n string) string { return vars[n] }
			if got := tm.expand(lookup); got != tt.want {
				t.Errorf("expand = %q, want %q", got, tt.want)
			}
			root, ok := tm.expandRoot(lookup)
			if root != tt.root || ok != (tt.root != "") {
				t.Errorf("root = %q %v, want %q", root, ok, tt.root)
			}
		})
	}
}

// FuzzTemplate: parsing never panics, and expanding every variable to
// itself reproduces the template.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"a/{device}/{point}", "{gateway}", "}{", "{a}{b}c", "x/{p", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := parseTemplate(s)
		if err != nil {
			return
		}
		if got := tm.expand(func(n string) string { return "{" + n + "}" }); got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
		_ = checkTopic(tm.expand(func(string) string { return "v" }))
		_, _ = tm.expandRoot(func(string) string { return "v" })
	})
}

func TestParseSetPayload(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "21.5", want: "21.5"},
		{in: " -7 \n", want: "-7"},
		{in: "true", want: "true"},
		{in: "OFF", want: "false"},
		{in: `{"value": 12345678901234567890}`, want: "12345678901234567890"},
		{in: `{"value":"auto"}`, want: `"auto"`},
		{in: `"quoted"`, want: `"quoted"`},
		{in: "hello world", want: `"hello world"`},
		{in: `{"value":true,"extra":1}`, want: "true"},
		{in: "", err: "empty"},
		{in: "NaN", err: "finite"},
		{in: `{"val":1}`, err: `no "value"`},
		{in: `{"value":null}`, err: "null"},
		{in: `{"value":[1]}`, err: "bool, number or string"},
		{in: `{"value":1e999}`, err: "out of range"},
		{in: "\xff", err: "UTF-8"},
		{in: `{"value":1`, err: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			v, err := parseSetPayload([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.String() != tt.want {
				t.Errorf("got %s, want %s", v, tt.want)
			}
		})
	}
}

func FuzzParseSetPayload(f *testing.F) {
	for _, s := range []string{"21.5", "on", `{"value":1}`, `{"value":"x"}`, `"q"`, "{", "1e400", "-0"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseSetPayload(b)
		if err != nil {
			return
		}
		if !utf8.ValidString(v.s) || !utf8.ValidString(v.num) {
			t.Fatalf("invalid UTF-8 in %#v", v)
		}
		// Whatever was accepted converts without panicking for every kind.
		for _, c := range []PointConfig{{Type: "int16", Scale: f64(0.1)}, {Type: "uint64"}, {Type: "bool"}, {Type: "float32"}, {Type: "string", Length: 2}, {}} {
			_, _ = toRaw(&c, kindOf(&c, nil, v), v)
		}
	})
}

func TestToRaw(t *testing.T) {
	tests := []struct {
		name string
		cfg  PointConfig
		in   string
		want any
		err  string
	}{
		{name: "scaled uint16", cfg: PointConfig{Type: "uint16", Scale: f64(0.1)}, in: "21.5", want: uint64(215)},
		{name: "offset int16", cfg: PointConfig{Type: "int16", Scale: f64(0.5), Offset: -10}, in: "-20", want: int64(-20)},
		{name: "int16 range", cfg: PointConfig{Type: "int16"}, in: "40000", err: "range"},
		{name: "uint16 negative", cfg: PointConfig{Type: "uint16"}, in: "-1", err: "range"},
		{name: "exact uint64", cfg: PointConfig{Type: "uint64"}, in: "18446744073709551615", want: uint64(18446744073709551615)},
		{name: "bool type", cfg: PointConfig{Type: "bit"}, in: "1", want: true},
		{name: "bool rejects 2", cfg: PointConfig{Type: "bool"}, in: "2", err: "not a boolean"},
		{name: "float min", cfg: PointConfig{Type: "float32", Min: f64(5)}, in: "4.9", err: "below the minimum 5"},
		{name: "float32 range", cfg: PointConfig{Type: "float32"}, in: "1e39", err: "range"},
		{name: "string fits", cfg: PointConfig{Type: "string", Length: 2}, in: "abcd", want: "abcd"},
		{name: "string too long", cfg: PointConfig{Type: "string", Length: 2}, in: "abcde", err: "does not fit"},
		{name: "sim toggle", cfg: PointConfig{Sim: "toggle"}, in: "on", want: true},
		{name: "sim number", cfg: PointConfig{Sim: "constant"}, in: "3", want: 3.0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := parseSetPayload([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := toRaw(&tt.cfg, kindOf(&tt.cfg, nil, v), v)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestEngineering(t *testing.T) {
	tests := []struct {
		raw  any
		cfg  PointConfig
		want any
	}{
		{int64(-5), PointConfig{}, int64(-5)},
		{uint64(215), PointConfig{Scale: f64(0.1)}, 21.5},
		{int64(3), PointConfig{Offset: 0.5}, 3.5},
		{float64(1.5), PointConfig{Scale: f64(2), Offset: 1}, 4.0},
		{true, PointConfig{Scale: f64(2)}, true},
		{"abc", PointConfig{}, "abc"},
		{int(7), PointConfig{}, int64(7)},
	}
	for _, tt := range tests {
		got, err := engineering(tt.raw, &tt.cfg)
		if err != nil {
			t.Errorf("%v: %v", tt.raw, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%v (-want +got):\n%s", tt.raw, diff)
		}
	}
	for _, bad := range []any{nil, struct{}{}, "\xff", float64(1) / zero()} {
		if _, err := engineering(bad, &PointConfig{}); err == nil {
			t.Errorf("engineering(%v) succeeded", bad)
		}
	}
}

func zero() float64 { return 0 }

func TestValuePayloads(t *testing.T) {
	ts := time.Date(2026, 11, 25, 21, 5, 3, 123456789, time.FixedZone("CET", 3600))
	tests := []struct {
		v    any
		json string
		text string
	}{
		{21.5, `{"value":21.5,"unit":"u","ts":"2026-11-25T20:05:03.123Z"}`, "21.5"},
		{1e-9, `{"value":1e-09,"unit":"u","ts":"2026-11-25T20:05:03.123Z"}`, "1e-09"},
		{int64(-3), `{"value":-3,"unit":"u","ts":"2026-11-25T20:05:03.123Z"}`, "-3"},
		{"a\"b", `{"value":"a\"b","unit":"u","ts":"2026-11-25T20:05:03.123Z"}`, `a"b`},
		{false, `{"value":false,"unit":"u","ts":"2026-11-25T20:05:03.123Z"}`, "false"},
	}
	for _, tt := range tests {
		if got := string(valuePayload("json", tt.v, "u", ts, QualityGood)); got != tt.json {
			t.Errorf("json %v = %s, want %s", tt.v, got, tt.json)
		}
		if got := string(valuePayload("value", tt.v, "u", ts, QualityGood)); got != tt.text {
			t.Errorf("value %v = %s, want %s", tt.v, got, tt.text)
		}
	}
	if got, want := string(valuePayload("json", 1.0, "", ts, QualityUncertain)), `{"value":1,"ts":"2026-11-25T20:05:03.123Z","quality":"uncertain"}`; got != want {
		t.Errorf("uncertain = %s, want %s", got, want)
	}
}

func TestChangedEnough(t *testing.T) {
	tests := []struct {
		last, cur any
		cfg       PointConfig
		want      bool
	}{
		{nil, 1.0, PointConfig{}, true},
		{1.0, 1.0, PointConfig{}, true}, // no deadband, no heartbeat: every reading
		{"a", "a", PointConfig{}, true},
		{1.0, 1.0, PointConfig{Heartbeat: new(time.Minute)}, false},
		{1.0, 1.1, PointConfig{Heartbeat: new(time.Minute)}, true},
		{1.0, 1.4, PointConfig{Deadband: 0.5}, false},
		{1.0, 1.5, PointConfig{Deadband: 0.5}, true},
		{100.0, 104.0, PointConfig{DeadbandPercent: 5}, false},
		{100.0, 95.0, PointConfig{DeadbandPercent: 5}, true},
		{int64(1), uint64(1), PointConfig{Heartbeat: new(time.Minute)}, false},
		{true, false, PointConfig{Deadband: 5}, true},
		{"a", "a", PointConfig{Heartbeat: new(time.Minute)}, false},
	}
	for _, tt := range tests {
		if got := changedEnough(tt.last, tt.cur, &tt.cfg); got != tt.want {
			t.Errorf("changedEnough(%v, %v, db %g/%g%%) = %v", tt.last, tt.cur, tt.cfg.Deadband, tt.cfg.DeadbandPercent, got)
		}
	}
}
