package sparkplug

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

func cmdPayload(t testing.TB, metrics ...*Payload_Metric) []byte {
	t.Helper()
	b, err := proto.Marshal(&Payload{Timestamp: ptr(uint64(1)), Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rejected renders Command.Rejected as metric → message for comparison.
func rejected(t *testing.T, errs []error) map[string]string {
	t.Helper()
	if len(errs) == 0 {
		return nil
	}
	got := map[string]string{}
	for _, e := range errs {
		var me *MetricError
		if !errors.As(e, &me) {
			t.Fatalf("rejection %v is %T, want *MetricError", e, e)
		}
		got[me.Metric] = me.Err.Error()
	}
	return got
}

func TestDecodeCommand(t *testing.T) {
	n := newTestNode(t)
	const ncmd, dcmdBoiler, dcmdMeter = "spBv1.0/plant1/NCMD/gw-01", "spBv1.0/plant1/DCMD/gw-01/boiler", "spBv1.0/plant1/DCMD/gw-01/meter"
	tests := []struct {
		name     string
		topic    string
		metrics  []*Payload_Metric
		want     Command
		rejected map[string]string
	}{
		{"rebirth by name", ncmd, []*Payload_Metric{
			{Name: ptr("Node Control/Rebirth"), Datatype: ptr(uint32(DataType_Boolean)), Value: &Payload_Metric_BooleanValue{BooleanValue: true}},
		}, Command{Rebirth: true}, nil},
		{"rebirth by alias", ncmd, []*Payload_Metric{
			{Alias: ptr(AliasRebirth), Value: &Payload_Metric_BooleanValue{BooleanValue: true}},
		}, Command{Rebirth: true}, nil},
		{"rebirth false", ncmd, []*Payload_Metric{
			{Name: ptr("Node Control/Rebirth"), Value: &Payload_Metric_BooleanValue{BooleanValue: false}},
		}, Command{}, nil},
		{"unsupported node commands", ncmd, []*Payload_Metric{
			{Name: ptr("Node Control/Reboot"), Value: &Payload_Metric_BooleanValue{BooleanValue: true}},
			{Name: ptr("Node Info/Backlog"), Value: &Payload_Metric_LongValue{LongValue: 0}},
			{Alias: ptr(AliasBacklog), Value: &Payload_Metric_LongValue{LongValue: 0}},
			{Name: ptr("Node Control/Rebirth"), Value: &Payload_Metric_StringValue{StringValue: "yes"}},
		}, Command{}, map[string]string{
			"Node Control/Reboot":  "not a writable node metric",
			"Node Info/Backlog":    "not a writable node metric",
			"alias 2":              "not a writable node metric",
			"Node Control/Rebirth": "Boolean wants a bool, got string",
		}},
		{"writes by name and alias", dcmdBoiler, []*Payload_Metric{
			{Name: ptr("pump"), Datatype: ptr(uint32(DataType_Boolean)), Value: &Payload_Metric_BooleanValue{BooleanValue: true}},
			{Alias: ptr(uint64(19)), Datatype: ptr(uint32(DataType_Double)), Value: &Payload_Metric_DoubleValue{DoubleValue: 21.5}},
			{Name: ptr("offset"), Datatype: ptr(uint32(DataType_Int16)), Value: &Payload_Metric_IntValue{IntValue: 0xFFFFFFFE}},
		}, Command{Writes: []Write{
			{Device: "boiler", Point: "pump", Value: true},
			{Device: "boiler", Point: "setpoint", Value: 21.5},
			{Device: "boiler", Point: "offset", Value: int64(-2)},
		}}, nil},
		{"integer host value for a double point", dcmdBoiler, []*Payload_Metric{
			{Name: ptr("setpoint"), Value: &Payload_Metric_IntValue{IntValue: 40}},
		}, Command{Writes: []Write{{Device: "boiler", Point: "setpoint", Value: 40.0}}}, nil},
		{"unsigned write", dcmdMeter, []*Payload_Metric{
			{Alias: ptr(uint64(23)), Value: &Payload_Metric_IntValue{IntValue: 65535}},
		}, Command{Writes: []Write{{Device: "meter", Point: "mode", Value: uint64(65535)}}}, nil},
		{"rejections keep the valid writes", dcmdBoiler, []*Payload_Metric{
			{Name: ptr("temperature"), Value: &Payload_Metric_FloatValue{FloatValue: 1}},
			{Name: ptr("nope"), Value: &Payload_Metric_FloatValue{FloatValue: 1}},
			{Alias: ptr(uint64(23)), Value: &Payload_Metric_IntValue{IntValue: 1}}, // meter's alias
			{Alias: ptr(uint64(999)), Value: &Payload_Metric_IntValue{IntValue: 1}},
			{Name: ptr("offset"), Value: &Payload_Metric_IntValue{IntValue: 40000}},
			{Name: ptr("setpoint"), IsNull: ptr(true)},
			{Name: ptr("pump"), Value: &Payload_Metric_BooleanValue{BooleanValue: false}},
			{Name: ptr("setpoint")},
		}, Command{Writes: []Write{{Device: "boiler", Point: "pump", Value: false}}}, map[string]string{
			"temperature": "metric is read-only",
			"nope":        `no such metric on device "boiler"`,
			"alias 23":    `no such metric on device "boiler"`,
			"alias 999":   `no such metric on device "boiler"`,
			"offset":      "40000 out of Int16 range",
			"setpoint":    "metric has no value", // the last of the two setpoint rejections
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := n.DecodeCommand(tt.topic, cmdPayload(t, tt.metrics...))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.rejected, rejected(t, got.Rejected)); diff != "" {
				t.Errorf("rejected (-want +got):\n%s", diff)
			}
			got.Rejected = nil
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("command (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeCommandRejectsMessage(t *testing.T) {
	n := newTestNode(t)
	good := cmdPayload(t, &Payload_Metric{Name: ptr("pump"), Value: &Payload_Metric_BooleanValue{BooleanValue: true}})
	tests := []struct {
		name, topic string
		payload     []byte
		notForUs    bool
	}{
		{"other group", "spBv1.0/plant2/DCMD/gw-01/boiler", good, true},
		{"other node", "spBv1.0/plant1/DCMD/gw-02/boiler", good, true},
		{"not a command", "spBv1.0/plant1/DDATA/gw-01/boiler", good, true},
		{"state topic", "spBv1.0/STATE/gw-01", good, true},
		{"not sparkplug", "myhome/boiler/set", good, true},
		{"unknown device", "spBv1.0/plant1/DCMD/gw-01/nope", good, false},
		{"garbage", "spBv1.0/plant1/DCMD/gw-01/boiler", []byte{0xff, 0xff, 0xff}, false},
		{"too large", "spBv1.0/plant1/NCMD/gw-01", make([]byte, maxCommandPayload+1), false},
		{"too many metrics", "spBv1.0/plant1/DCMD/gw-01/boiler", bytes.Repeat([]byte{0x12, 0x00}, maxCommandMetrics+1), false},
		{"truncated metric", "spBv1.0/plant1/DCMD/gw-01/boiler", []byte{0x12, 0x05, 0x0a}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.DecodeCommand(tt.topic, tt.payload)
			if err == nil {
				t.Fatal("DecodeCommand succeeded")
			}
			if got := errors.Is(err, ErrNotForThisNode); got != tt.notForUs {
				t.Errorf("errors.Is(%v, ErrNotForThisNode) = %v, want %v", err, got, tt.notForUs)
			}
		})
	}
}

func TestWriteText(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{true, "true"},
		{int64(-2), "-2"},
		{uint64(18446744073709551615), "18446744073709551615"},
		{21.5, "21.5"},
		{`a "b"`, `"a \"b\""`},
	}
	for _, tt := range tests {
		if got := (Write{Value: tt.v}).Text(); got != tt.want {
			t.Errorf("Text(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

// FuzzDecodeCommand feeds outside bytes to the command decoder: it must
// never panic, and every write it returns must carry a value of its
// point's canonical type that converts to itself.
func FuzzDecodeCommand(f *testing.F) {
	n, err := NewNode(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, testDevices())
	if err != nil {
		f.Fatal(err)
	}
	f.Add("spBv1.0/plant1/NCMD/gw-01", cmdPayload(f, &Payload_Metric{Name: ptr(MetricRebirth), Value: &Payload_Metric_BooleanValue{BooleanValue: true}}))
	f.Add("spBv1.0/plant1/DCMD/gw-01/boiler", cmdPayload(f,
		&Payload_Metric{Name: ptr("offset"), Value: &Payload_Metric_IntValue{IntValue: 0xFFFFFFFE}},
		&Payload_Metric{Alias: ptr(uint64(19)), Value: &Payload_Metric_DoubleValue{DoubleValue: 2}}))
	f.Add("spBv1.0/plant1/DCMD/gw-01/meter", cmdPayload(f, &Payload_Metric{Alias: ptr(uint64(23)), Value: &Payload_Metric_LongValue{LongValue: 1 << 40}}))
	f.Add("spBv1.0/plant1/DCMD/gw-01/boiler", []byte{0x12, 0x05, 0x0a, 0x03, 'p', 'u', 'm'})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		c, err := n.DecodeCommand(topic, payload)
		if err != nil {
			return
		}
		for _, w := range c.Writes {
			al, ok := n.Alias(w.Device, w.Point)
			if !ok {
				t.Fatalf("write to unknown point %s/%s", w.Device, w.Point)
			}
			m := n.byAlias[al]
			if !m.point.Writable {
				t.Fatalf("write to read-only point %s/%s", w.Device, w.Point)
			}
			back, err := Convert(m.point.DataType, w.Value)
			if err != nil || back != w.Value {
				t.Fatalf("write %s/%s value %#v is not canonical %s: %v, %v", w.Device, w.Point, w.Value, m.point.DataType, back, err)
			}
		}
	})
}
