package sparkplug

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

var (
	t0 = time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	t1 = t0.Add(1500 * time.Millisecond)
)

func testDevices() []Device {
	return []Device{
		{Name: "boiler", Points: []Point{
			{Name: "temperature", DataType: DataType_Float},
			{Name: "pressure", DataType: DataType_Double},
			{Name: "pump", DataType: DataType_Boolean, Writable: true},
			{Name: "setpoint", DataType: DataType_Double, Writable: true},
			{Name: "offset", DataType: DataType_Int16, Writable: true},
		}},
		{Name: "meter", Points: []Point{
			{Name: "energy", DataType: DataType_UInt64},
			{Name: "serial", DataType: DataType_String},
			{Name: "mode", DataType: DataType_UInt16, Writable: true},
		}},
	}
}

func newTestNode(t *testing.T) *Node {
	t.Helper()
	n, err := NewNode(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, testDevices())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func decode(t *testing.T, m Message) *Payload {
	t.Helper()
	var p Payload
	if err := proto.Unmarshal(m.Payload, &p); err != nil {
		t.Fatalf("%s: %v", m.Topic, err)
	}
	return &p
}

func ms(tm time.Time) *uint64 { return ptr(uint64(tm.UnixMilli())) }

// must fails the test on a builder's error: must(t)(n.NBirth(…)).
func must(t *testing.T) func(Message, error) Message {
	return func(m Message, err error) Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

func TestAliasesStableInConfigOrder(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	want := map[string]uint64{
		"boiler/temperature": 16, "boiler/pressure": 17, "boiler/pump": 18, "boiler/setpoint": 19, "boiler/offset": 20,
		"meter/energy": 21, "meter/serial": 22, "meter/mode": 23,
	}
	for _, n := range []*Node{a, b} {
		got := map[string]uint64{}
		for _, d := range testDevices() {
			for _, p := range d.Points {
				al, ok := n.Alias(d.Name, p.Name)
				if !ok {
					t.Fatalf("no alias for %s/%s", d.Name, p.Name)
				}
				got[d.Name+"/"+p.Name] = al
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("aliases (-want +got):\n%s", diff)
		}
	}
	if _, ok := a.Alias("boiler", "nope"); ok {
		t.Error("alias for an unknown point")
	}
	if _, ok := a.Alias("nope", "pump"); ok {
		t.Error("alias for an unknown device")
	}
}

func TestNewNodeRejects(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		devices []Device
		want    []string
	}{
		{"bad group", Config{GroupID: "a/b", EdgeNodeID: "gw"}, nil, []string{"group id"}},
		{"bad edge node", Config{GroupID: "g", EdgeNodeID: "{gateway}+"}, nil, []string{"edge node id"}},
		{"devices", Config{GroupID: "g", EdgeNodeID: "gw"}, []Device{
			{Name: "a/b"},
			{Name: "ok", Points: []Point{{Name: "x", DataType: DataType_Double}, {Name: "x", DataType: DataType_Double}, {Name: "", DataType: DataType_Double}, {Name: "t", DataType: DataType_Template}}},
			{Name: "ok"},
		}, []string{
			`device "a/b"`,
			`device "ok" point "x": duplicate name`,
			`device "ok": a point has no name`,
			`device "ok" point "t": datatype Template is not supported`,
			`device "ok": duplicate device id`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewNode(tt.cfg, tt.devices)
			if err == nil {
				t.Fatal("NewNode succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLifecyclePayloads(t *testing.T) {
	n := newTestNode(t)
	will := must(t)(n.Connect(7))
	if diff := cmp.Diff(Message{Topic: "spBv1.0/plant1/NDEATH/gw-01", QoS: 1}, will, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Payload" }, cmp.Ignore())); diff != "" {
		t.Errorf("NDEATH message (-want +got):\n%s", diff)
	}
	wantDeath := &Payload{Metrics: []*Payload_Metric{{Name: ptr("bdSeq"), Datatype: ptr(uint32(DataType_Int64)), Value: &Payload_Metric_LongValue{LongValue: 7}}}}
	if diff := cmp.Diff(wantDeath, decode(t, will), protocmp.Transform()); diff != "" {
		t.Errorf("NDEATH payload (-want +got):\n%s", diff)
	}

	nb := must(t)(n.NBirth(t0, NodeMetrics{Backlog: 42, Version: "1.2.3"}))
	if nb.Topic != "spBv1.0/plant1/NBIRTH/gw-01" || nb.QoS != 0 || nb.Retain {
		t.Errorf("NBIRTH message = %s qos %d retain %v", nb.Topic, nb.QoS, nb.Retain)
	}
	wantBirth := &Payload{Timestamp: ms(t0), Seq: ptr(uint64(0)), Metrics: []*Payload_Metric{
		{Name: ptr("bdSeq"), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_Int64)), Value: &Payload_Metric_LongValue{LongValue: 7}},
		{Name: ptr("Node Control/Rebirth"), Alias: ptr(uint64(1)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_Boolean)), Value: &Payload_Metric_BooleanValue{BooleanValue: false}},
		{Name: ptr("Node Info/Backlog"), Alias: ptr(uint64(2)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_UInt64)), Value: &Payload_Metric_LongValue{LongValue: 42}},
		{Name: ptr("Node Info/Version"), Alias: ptr(uint64(3)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_String)), Value: &Payload_Metric_StringValue{StringValue: "1.2.3"}},
	}}
	if diff := cmp.Diff(wantBirth, decode(t, nb), protocmp.Transform()); diff != "" {
		t.Errorf("NBIRTH payload (-want +got):\n%s", diff)
	}

	// DBIRTH: every metric, named, with the latest sample's value and time;
	// a point without a sample is null at the birth time.
	db := must(t)(n.DBirth("boiler", t1, []Sample{
		{Point: "temperature", Value: 20.0, Time: t0},
		{Point: "temperature", Value: 21.5, Time: t0.Add(time.Second)},
		{Point: "pressure", Value: 1.25, Time: t0},
		{Point: "pump", Value: true, Time: t0},
		{Point: "offset", Value: int64(-3), Time: t0},
	}))
	if db.Topic != "spBv1.0/plant1/DBIRTH/gw-01/boiler" {
		t.Errorf("DBIRTH topic %s", db.Topic)
	}
	wantDBirth := &Payload{Timestamp: ms(t1), Seq: ptr(uint64(1)), Metrics: []*Payload_Metric{
		{Name: ptr("temperature"), Alias: ptr(uint64(16)), Timestamp: ms(t0.Add(time.Second)), Datatype: ptr(uint32(DataType_Float)), Value: &Payload_Metric_FloatValue{FloatValue: 21.5}},
		{Name: ptr("pressure"), Alias: ptr(uint64(17)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_Double)), Value: &Payload_Metric_DoubleValue{DoubleValue: 1.25}},
		{Name: ptr("pump"), Alias: ptr(uint64(18)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_Boolean)), Value: &Payload_Metric_BooleanValue{BooleanValue: true}},
		{Name: ptr("setpoint"), Alias: ptr(uint64(19)), Timestamp: ms(t1), Datatype: ptr(uint32(DataType_Double)), IsNull: ptr(true)},
		{Name: ptr("offset"), Alias: ptr(uint64(20)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_Int16)), Value: &Payload_Metric_IntValue{IntValue: 0xFFFFFFFD}},
	}}
	if diff := cmp.Diff(wantDBirth, decode(t, db), protocmp.Transform()); diff != "" {
		t.Errorf("DBIRTH payload (-want +got):\n%s", diff)
	}

	// DDATA: aliases only, no names; historical readings flagged.
	dd := must(t)(n.DData("meter", t1, []Sample{
		{Point: "energy", Value: uint64(123456789), Time: t0, Historical: true},
		{Point: "mode", Value: int64(3), Time: t1},
	}))
	wantDData := &Payload{Timestamp: ms(t1), Seq: ptr(uint64(2)), Metrics: []*Payload_Metric{
		{Alias: ptr(uint64(21)), Timestamp: ms(t0), Datatype: ptr(uint32(DataType_UInt64)), IsHistorical: ptr(true), Value: &Payload_Metric_LongValue{LongValue: 123456789}},
		{Alias: ptr(uint64(23)), Timestamp: ms(t1), Datatype: ptr(uint32(DataType_UInt16)), Value: &Payload_Metric_IntValue{IntValue: 3}},
	}}
	if diff := cmp.Diff(wantDData, decode(t, dd), protocmp.Transform()); diff != "" {
		t.Errorf("DDATA payload (-want +got):\n%s", diff)
	}

	nd := must(t)(n.NData(t1, NodeMetrics{Backlog: 0, Version: "1.2.3"}))
	wantNData := &Payload{Timestamp: ms(t1), Seq: ptr(uint64(3)), Metrics: []*Payload_Metric{
		{Alias: ptr(uint64(2)), Timestamp: ms(t1), Datatype: ptr(uint32(DataType_UInt64)), Value: &Payload_Metric_LongValue{LongValue: 0}},
		{Alias: ptr(uint64(3)), Timestamp: ms(t1), Datatype: ptr(uint32(DataType_String)), Value: &Payload_Metric_StringValue{StringValue: "1.2.3"}},
	}}
	if diff := cmp.Diff(wantNData, decode(t, nd), protocmp.Transform()); diff != "" {
		t.Errorf("NDATA payload (-want +got):\n%s", diff)
	}

	ddeath := must(t)(n.DDeath("meter", t1))
	if ddeath.Topic != "spBv1.0/plant1/DDEATH/gw-01/meter" {
		t.Errorf("DDEATH topic %s", ddeath.Topic)
	}
	if diff := cmp.Diff(&Payload{Timestamp: ms(t1), Seq: ptr(uint64(4))}, decode(t, ddeath), protocmp.Transform()); diff != "" {
		t.Errorf("DDEATH payload (-want +got):\n%s", diff)
	}

	// A clean disconnect publishes NDEATH itself, with a timestamp.
	death := must(t)(n.NDeath(t1))
	wantDeath.Timestamp = ms(t1)
	wantDeath.Metrics[0].Timestamp = ms(t1)
	if diff := cmp.Diff(wantDeath, decode(t, death), protocmp.Transform()); diff != "" {
		t.Errorf("NDEATH at disconnect (-want +got):\n%s", diff)
	}
}

// seq is 0 in NBIRTH, then counts every message built, wraps from 255 to
// 0, and a rebirth restarts it at 0 with the same bdSeq; a new connection
// takes a new bdSeq.
func TestSeqWrapsAndRebirth(t *testing.T) {
	n := newTestNode(t)
	must(t)(n.Connect(3))
	if p := decode(t, must(t)(n.NBirth(t0, NodeMetrics{}))); p.GetSeq() != 0 {
		t.Fatalf("NBIRTH seq %d", p.GetSeq())
	}
	var got []uint64
	for i := range 600 {
		var m Message
		var err error
		switch i % 3 {
		case 0:
			m, err = n.DData("boiler", t1, []Sample{{Point: "pressure", Value: float64(i), Time: t1}})
		case 1:
			m, err = n.NData(t1, NodeMetrics{Backlog: uint64(i)})
		case 2:
			m, err = n.DBirth("meter", t1, nil)
		}
		got = append(got, decode(t, must(t)(m, err)).GetSeq())
	}
	for i, s := range got {
		if want := uint64(i+1) % 256; s != want {
			t.Fatalf("message %d: seq %d, want %d (sequence %v…)", i, s, want, got[max(0, i-3):i+1])
		}
	}

	rb := decode(t, must(t)(n.NBirth(t1, NodeMetrics{})))
	if rb.GetSeq() != 0 || rb.GetMetrics()[0].GetLongValue() != 3 {
		t.Errorf("rebirth: seq %d bdSeq %d, want 0 and 3", rb.GetSeq(), rb.GetMetrics()[0].GetLongValue())
	}
	if s := decode(t, must(t)(n.DDeath("boiler", t1))).GetSeq(); s != 1 {
		t.Errorf("after rebirth: seq %d, want 1", s)
	}

	will := decode(t, must(t)(n.Connect(4)))
	if will.GetMetrics()[0].GetLongValue() != 4 {
		t.Errorf("new connection NDEATH bdSeq %d, want 4", will.GetMetrics()[0].GetLongValue())
	}
	if _, err := n.DDeath("boiler", t1); err == nil {
		t.Error("DDEATH after a new Connect and before its NBIRTH succeeded")
	}
	if p := decode(t, must(t)(n.NBirth(t1, NodeMetrics{}))); p.GetSeq() != 0 || p.GetMetrics()[0].GetLongValue() != 4 {
		t.Errorf("NBIRTH of the new connection: seq %d bdSeq %d", p.GetSeq(), p.GetMetrics()[0].GetLongValue())
	}
}

// A message that cannot be built consumes no seq.
func TestFailedMessageKeepsSeq(t *testing.T) {
	n := newTestNode(t)
	must(t)(n.Connect(0))
	must(t)(n.NBirth(t0, NodeMetrics{}))
	bad := []struct {
		name string
		err  func() error
		want string
	}{
		{"wrong type", func() error {
			_, err := n.DData("boiler", t1, []Sample{{Point: "pump", Value: "on", Time: t1}})
			return err
		}, `DDATA device "boiler": point "pump": Boolean wants a bool, got string`},
		{"out of range", func() error {
			_, err := n.DData("boiler", t1, []Sample{{Point: "offset", Value: int64(40000), Time: t1}})
			return err
		}, "40000 out of Int16 range"},
		{"unknown point", func() error {
			_, err := n.DData("boiler", t1, []Sample{{Point: "nope", Value: 1.0, Time: t1}})
			return err
		}, `unknown point "nope"`},
		{"no samples", func() error { _, err := n.DData("boiler", t1, nil); return err }, "no samples"},
		{"unknown device", func() error { _, err := n.DBirth("nope", t1, nil); return err }, `unknown device "nope"`},
		{"DBIRTH unknown point", func() error {
			_, err := n.DBirth("boiler", t1, []Sample{{Point: "nope", Value: 1.0}})
			return err
		}, `unknown point "nope"`},
		{"DDEATH unknown device", func() error { _, err := n.DDeath("nope", t1); return err }, `unknown device "nope"`},
	}
	for _, b := range bad {
		if err := b.err(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: error %v, want it to contain %q", b.name, err, b.want)
		}
	}
	if s := decode(t, must(t)(n.DDeath("boiler", t1))).GetSeq(); s != 1 {
		t.Errorf("seq after failures = %d, want 1", s)
	}
}

func TestMessagesNeedSession(t *testing.T) {
	n := newTestNode(t)
	if _, err := n.NBirth(t0, NodeMetrics{}); err == nil {
		t.Error("NBIRTH before Connect succeeded")
	}
	if _, err := n.NDeath(t0); err == nil {
		t.Error("NDEATH before Connect succeeded")
	}
	must(t)(n.Connect(0))
	if _, err := n.DBirth("boiler", t0, nil); err == nil {
		t.Error("DBIRTH before NBIRTH succeeded")
	}
	if _, err := n.NData(t0, NodeMetrics{}); err == nil {
		t.Error("NDATA before NBIRTH succeeded")
	}
}

// Messages built concurrently each take a distinct seq: 1…n with none
// lost or repeated.
func TestConcurrentBuildersTakeDistinctSeqs(t *testing.T) {
	n := newTestNode(t)
	must(t)(n.Connect(0))
	must(t)(n.NBirth(t0, NodeMetrics{}))
	const workers, each = 4, 50
	seqs := make(chan uint64, workers*each)
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m, err := n.DData("boiler", t1, []Sample{{Point: "pressure", Value: float64(w*each + i), Time: t1}})
				if err != nil {
					errs <- err
					continue
				}
				var p Payload
				if err := proto.Unmarshal(m.Payload, &p); err != nil {
					errs <- err
					continue
				}
				seqs <- p.GetSeq()
			}
		})
	}
	wg.Wait()
	close(seqs)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Errorf("seq %d taken twice", s)
		}
		seen[s] = true
	}
	for s := uint64(1); s <= workers*each; s++ {
		if !seen[s] {
			t.Errorf("seq %d missing", s)
		}
	}
}
