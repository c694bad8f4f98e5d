package serial

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/devices"
)

func testDevice(parse devices.ParseConfig, points ...string) *devices.Device {
	cfg := devices.DeviceConfig{Name: "s", Driver: "serial", Port: "/dev/null", Parse: &parse}
	for _, p := range points {
		cfg.Points = append(cfg.Points, devices.PointConfig{Name: p})
	}
	cfg.Defaults()
	dev := &devices.Device{Config: cfg}
	for i := range cfg.Points {
		dev.Points = append(dev.Points, &devices.Point{Config: cfg.Points[i], Device: dev, Index: i})
	}
	return dev
}

func TestFramer(t *testing.T) {
	st := &counters{}
	f := newFramer("\r\n", 8, st)
	var got []string
	emit := func(l []byte) { got = append(got, string(l)) }
	for _, chunk := range []string{"ab", "c\r", "\nde\r\nfg", "hijklmnopq", "rs\r\nok\r", "\n", "tail"} {
		f.feed([]byte(chunk), emit)
	}
	f.flush()
	if diff := cmp.Diff([]string{"abc", "de", "ok"}, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if st.tooLong.Load() != 1 || st.partial.Load() != 1 {
		t.Errorf("tooLong %d partial %d, want 1 and 1", st.tooLong.Load(), st.partial.Load())
	}
	// An over-long line that arrives whole, terminator included.
	got = nil
	f.feed([]byte("0123456789\r\nx\r\n"), emit)
	if diff := cmp.Diff([]string{"x"}, got); diff != "" || st.tooLong.Load() != 2 {
		t.Errorf("lines (-want +got):\n%s tooLong %d", diff, st.tooLong.Load())
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		parse devices.ParseConfig
		line  string
		want  map[string]any
		err   error
	}{
		{name: "regex", parse: devices.ParseConfig{Regex: `^T=(?P<t>-?[0-9.]+) H=(?P<h>[0-9.]+)$`}, line: "T=21.5 H=40\r",
			want: map[string]any{"t": 21.5, "h": int64(40)}},
		{name: "regex no match", parse: devices.ParseConfig{Regex: `^T=(?P<t>-?[0-9.]+)$`}, line: "X=1", err: errNoMatch},
		{name: "regex optional group", parse: devices.ParseConfig{Regex: `^T=(?P<t>[0-9]+)(?: H=(?P<h>[0-9]+))?$`}, line: "T=3", want: map[string]any{"t": int64(3)}},
		{name: "json", parse: devices.ParseConfig{JSON: true}, line: `{"t": 21.5, "h": 40, "ok": true, "s": "x", "other": 1, "n": null}`,
			want: map[string]any{"t": 21.5, "h": int64(40), "ok": true, "s": "x"}},
		{name: "json broken", parse: devices.ParseConfig{JSON: true}, line: `{"t": 2`, err: errNoMatch},
		{name: "json unknown keys only", parse: devices.ParseConfig{JSON: true}, line: `{"x": 2}`, err: errNoMatch},
		{name: "kv", parse: devices.ParseConfig{KV: true}, line: "t=-1.5 h=40,ok=false s=hello junk", want: map[string]any{"t": -1.5, "h": int64(40), "ok": false, "s": "hello"}},
		{name: "empty", parse: devices.ParseConfig{KV: true}, line: " \r", err: errEmpty},
		{name: "utf8", parse: devices.ParseConfig{KV: true}, line: "t=\xff", err: errInvalidUTF8},
		{name: "garbage", parse: devices.ParseConfig{KV: true}, line: "t=1\x00\x01", err: errGarbage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := testDevice(tt.parse, "t", "h", "ok", "s", "n")
			p, err := newParser(dev)
			if err != nil {
				t.Fatal(err)
			}
			s, err := cleanLine([]byte(tt.line))
			var vals map[*devices.Point]any
			if err == nil {
				vals, err = p.parse(s)
			}
			if err != tt.err {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			got := map[string]any{}
			for pt, v := range vals {
				got[pt.Name()] = v
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzLine feeds arbitrary bytes through the framer and the three parsers:
// nothing panics, no line exceeds max_line_length, and every parsed line
// was valid UTF-8 text without control characters.
func FuzzLine(f *testing.F) {
	for _, s := range []string{"T=21.5 H=40\r\n", "{\"t\":1}\n", "a=1 b=2\n", "\xff\xfe\n", "\x00\x01garbage\n", strings.Repeat("x", 40) + "\n"} {
		f.Add([]byte(s), uint8(3))
	}
	parsers := []devices.ParseConfig{{Regex: `T=(?P<t>[-0-9.]+)`}, {JSON: true}, {KV: true}}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		for _, pc := range parsers {
			dev := testDevice(pc, "t", "h")
			p, err := newParser(dev)
			if err != nil {
				t.Fatal(err)
			}
			st := &counters{}
			fr := newFramer("\n", 32, st)
			line := func(l []byte) {
				if len(l) > 32 {
					t.Fatalf("line of %d bytes passed a 32-byte limit", len(l))
				}
				s, err := cleanLine(l)
				if err != nil {
					return
				}
				if !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\n") {
					t.Fatalf("bad line accepted: %q", s)
				}
				_, _ = p.parse(s)
			}
			n := int(split)%8 + 1
			for i := 0; i < len(data); i += n {
				fr.feed(data[i:min(len(data), i+n)], line)
			}
			fr.flush()
		}
	})
}
