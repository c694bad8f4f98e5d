package sparkplug

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseState(t *testing.T) {
	tests := []struct {
		payload string
		want    State
		wantErr string
	}{
		{`{"online":true,"timestamp":1796662800000}`, State{Online: true, Timestamp: 1796662800000}, ""},
		{` {"timestamp": 5, "online": false, "extra": [1]} `, State{Timestamp: 5}, ""},
		{`{"online":true}`, State{}, `no "timestamp"`},
		{`{"timestamp":1}`, State{}, `no boolean "online"`},
		{`{"online":"true","timestamp":1}`, State{}, "not a JSON object"},
		{`{"online":true,"timestamp":-1}`, State{}, "not a non-negative integer"},
		{`{"online":true,"timestamp":1.5}`, State{}, "not a non-negative integer"},
		{`{"online":true,"timestamp":1e3}`, State{}, "not a non-negative integer"},
		{`{"online":true,"timestamp":18446744073709551616}`, State{}, "not a non-negative integer"},
		{`ONLINE`, State{}, "not a JSON object"},
		{`{"online":true,"timestamp":1}{}`, State{}, "data after the JSON object"},
		{``, State{}, "not a JSON object"},
		{`{"online":true,"timestamp":1,"pad":"` + strings.Repeat("x", maxStatePayload) + `"}`, State{}, "limit"},
	}
	for _, tt := range tests {
		got, err := ParseState([]byte(tt.payload))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseState(%.40q) = %v, %v; want an error containing %q", tt.payload, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseState(%q): %v", tt.payload, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseState(%q) (-want +got):\n%s", tt.payload, diff)
		}
	}
}

// The tracker follows the specification's rules: offline until the first
// online=true; a message older than the latest accepted one (a stale will
// of a replaced host session) is ignored; the will of the current session
// carries the birth's timestamp and is accepted.
func TestHostTracker(t *testing.T) {
	h, err := NewHostTracker("scada")
	if err != nil {
		t.Fatal(err)
	}
	if h.Topic() != "spBv1.0/STATE/scada" || h.Online() {
		t.Fatalf("new tracker: topic %q online %v", h.Topic(), h.Online())
	}
	type step struct {
		topic, payload string
		online, chg    bool
		wantErr        bool
	}
	steps := []step{
		{"spBv1.0/STATE/scada", `{"online":false,"timestamp":100}`, false, false, false},
		{"spBv1.0/STATE/scada", `{"online":true,"timestamp":200}`, true, true, false},
		{"spBv1.0/STATE/scada", `{"online":false,"timestamp":100}`, true, false, false}, // stale will
		{"spBv1.0/STATE/other", `{"online":false,"timestamp":300}`, true, false, true},
		{"spBv1.0/STATE/scada", `garbage`, true, false, true},
		{"spBv1.0/STATE/scada", `{"online":true,"timestamp":200}`, true, false, false},  // retained copy again
		{"spBv1.0/STATE/scada", `{"online":false,"timestamp":200}`, false, true, false}, // will of this session
		{"spBv1.0/STATE/scada", `{"online":true,"timestamp":150}`, false, false, false}, // older birth
		{"spBv1.0/STATE/scada", `{"online":true,"timestamp":400}`, true, true, false},
	}
	for i, s := range steps {
		online, chg, err := h.Update(s.topic, []byte(s.payload))
		if (err != nil) != s.wantErr || online != s.online || chg != s.chg {
			t.Errorf("step %d %s %s: online %v changed %v err %v; want online %v changed %v error %v",
				i, s.topic, s.payload, online, chg, err, s.online, s.chg, s.wantErr)
		}
		if h.Online() != s.online {
			t.Errorf("step %d: Online() = %v, want %v", i, h.Online(), s.online)
		}
	}
	if _, err := NewHostTracker("a/b"); err == nil {
		t.Error("NewHostTracker accepted a host id with '/'")
	}
}

// FuzzParseState: STATE payloads come from the upstream broker. Never
// panic; an accepted payload re-encodes to an equal State.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"online":true,"timestamp":1796662800000}`))
	f.Add([]byte(`{"online":false,"timestamp":0,"x":null}`))
	f.Add([]byte(`OFFLINE`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		s, err := ParseState(payload)
		if err != nil {
			return
		}
		again, err := ParseState(fmt.Appendf(nil, `{"online":%v,"timestamp":%d}`, s.Online, s.Timestamp))
		if err != nil || again != s {
			t.Fatalf("%q parsed to %+v, its re-encoding to %+v, %v", payload, s, again, err)
		}
	})
}
