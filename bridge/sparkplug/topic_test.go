package sparkplug

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTopicString(t *testing.T) {
	tests := []struct {
		topic Topic
		want  string
	}{
		{Topic{Group: "plant1", Type: NBirth, EdgeNode: "gw-01"}, "spBv1.0/plant1/NBIRTH/gw-01"},
		{Topic{Group: "plant1", Type: NDeath, EdgeNode: "gw-01"}, "spBv1.0/plant1/NDEATH/gw-01"},
		{Topic{Group: "plant1", Type: NData, EdgeNode: "gw-01"}, "spBv1.0/plant1/NDATA/gw-01"},
		{Topic{Group: "plant1", Type: NCmd, EdgeNode: "gw-01"}, "spBv1.0/plant1/NCMD/gw-01"},
		{Topic{Group: "plant1", Type: DBirth, EdgeNode: "gw-01", Device: "boiler"}, "spBv1.0/plant1/DBIRTH/gw-01/boiler"},
		{Topic{Group: "plant1", Type: DDeath, EdgeNode: "gw-01", Device: "boiler"}, "spBv1.0/plant1/DDEATH/gw-01/boiler"},
		{Topic{Group: "plant1", Type: DData, EdgeNode: "gw-01", Device: "boiler"}, "spBv1.0/plant1/DDATA/gw-01/boiler"},
		{Topic{Group: "plant1", Type: DCmd, EdgeNode: "gw-01", Device: "boiler"}, "spBv1.0/plant1/DCMD/gw-01/boiler"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.topic.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			back, err := ParseTopic(tt.want)
			if err != nil {
				t.Fatalf("ParseTopic: %v", err)
			}
			if diff := cmp.Diff(tt.topic, back); diff != "" {
				t.Errorf("ParseTopic round trip (-want +got):\n%s", diff)
			}
		})
	}
	if got, want := StateTopic("scada-1"), "spBv1.0/STATE/scada-1"; got != want {
		t.Errorf("StateTopic = %q, want %q", got, want)
	}
}

func TestParseTopicRejects(t *testing.T) {
	tests := []struct{ topic, wantErr string }{
		{"spBv1.0/STATE/scada-1", "not spBv1.0/"},
		{"spBv1.0/plant1/STATE/gw", `unknown message type "STATE"`},
		{"spBv1.0/plant1/NBIRTH", "not spBv1.0/"},
		{"spAv1.0/plant1/NBIRTH/gw", "not spBv1.0/"},
		{"spBv1.0/plant1/NCMD/gw/boiler", "NCMD topics have 4 levels, got 5"},
		{"spBv1.0/plant1/DCMD/gw", "DCMD topics have 5 levels, got 4"},
		{"spBv1.0/plant1/DCMD/gw/boiler/x", "DCMD topics have 5 levels, got 6"},
		{"spBv1.0/plant1/ncmd/gw", `unknown message type "ncmd"`},
		{"spBv1.0//NCMD/gw", "group id: must not be empty"},
		{"spBv1.0/plant1/NCMD/", "edge node id: must not be empty"},
		{"spBv1.0/plant1/DCMD/gw/", "device id: must not be empty"},
		{"spBv1.0/pl+nt/NCMD/gw", "group id: \"pl+nt\" must not contain"},
		{"spBv1.0/plant1/NCMD/g#", "edge node id: \"g#\" must not contain"},
		{"spBv1.0/plant1/NCMD/g\xff", "edge node id: is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			_, err := ParseTopic(tt.topic)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseTopic(%q) error = %v, want it to contain %q", tt.topic, err, tt.wantErr)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"gw-01", true},
		{"Plant 1 (north)", true},
		{"Kühlhaus", true},
		{"", false},
		{"a/b", false},
		{"a+b", false},
		{"a#", false},
		{"a\x00b", false},
		{"\xc3\x28", false},
	}
	for _, tt := range tests {
		if err := CheckID(tt.id); (err == nil) != tt.ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}
