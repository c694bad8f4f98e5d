package sparkplug

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pyPayload and pyMetric mirror testdata/decode_payloads.py's output.
type pyPayload struct {
	File      string     `json:"file"`
	Timestamp *uint64    `json:"timestamp"`
	Seq       *uint64    `json:"seq"`
	Metrics   []pyMetric `json:"metrics"`
}

type pyMetric struct {
	Name       *string `json:"name"`
	Alias      *uint64 `json:"alias"`
	Timestamp  *uint64 `json:"timestamp"`
	Datatype   *string `json:"datatype"`
	Historical *bool   `json:"historical"`
	Null       *bool   `json:"null"`
	Field      *string `json:"field"`
	Value      *string `json:"value"`
}

// pythonDecode generates Python classes from sparkplug_b.proto with
// Debian's protoc into a temporary directory and decodes the payloads with
// /usr/bin/python3 (Debian's python3-protobuf). Both come from the `peers`
// list of .ci/run; their absence fails the test.
func pythonDecode(t *testing.T, msgs []Message) []pyPayload {
	t.Helper()
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Fatalf("protoc not found (Debian package protobuf-compiler, installed by .ci/run): %v", err)
	}
	dir := t.TempDir()
	if out, err := exec.Command(protoc, "--proto_path=.", "--python_out="+dir, "sparkplug_b.proto").CombinedOutput(); err != nil {
		t.Fatalf("protoc --python_out: %v\n%s", err, out)
	}
	args := []string{"testdata/decode_payloads.py", dir}
	for i, m := range msgs {
		path := filepath.Join(dir, fmt.Sprintf("%02d.bin", i))
		if err := os.WriteFile(path, m.Payload, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, path)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("/usr/bin/python3", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("python3 decoder (needs Debian's python3-protobuf): %v\n%s", err, stderr.String())
	}
	var got []pyPayload
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("decoder output: %v\n%s", err, stdout.String())
	}
	return got
}

// TestPythonDecodesPayloads checks what the Go encoder produced with an
// independent decoder, field by field: seq, bdSeq, names and aliases,
// datatypes, timestamps, values (signed, 64-bit, float, null, historical).
func TestPythonDecodesPayloads(t *testing.T) {
	n := newTestNode(t)
	var msgs []Message
	add := func(m Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	t2 := t0.Add(2 * time.Second)
	add(n.Connect(200))
	add(n.NBirth(t0, NodeMetrics{Backlog: 12, Version: "0.9.0"}))
	add(n.DBirth("boiler", t1, []Sample{
		{Point: "temperature", Value: 21.5, Time: t0},
		{Point: "pressure", Value: 1.013, Time: t0},
		{Point: "pump", Value: false, Time: t0},
		{Point: "offset", Value: int64(-300), Time: t0},
	}))
	add(n.DData("meter", t2, []Sample{
		{Point: "energy", Value: uint64(18446744073709551615), Time: t0, Historical: true},
		{Point: "serial", Value: "SN-Ä1", Time: t1, Historical: true},
		{Point: "mode", Value: int64(7), Time: t2},
	}))
	add(n.NData(t2, NodeMetrics{Backlog: 0, Version: "0.9.0"}))
	add(n.DDeath("meter", t2))
	// Up to seq 255, then the wrap to 0.
	for i := 5; i <= 256; i++ {
		m, err := n.DData("boiler", t2, []Sample{{Point: "setpoint", Value: float64(i), Time: t2}})
		if i >= 255 {
			add(m, err)
		} else if err != nil {
			t.Fatal(err)
		}
	}

	got := pythonDecode(t, msgs)

	u := func(v uint64) *uint64 { return &v }
	s := func(v string) *string { return &v }
	yes := ptr(true)
	ms := func(tm time.Time) *uint64 { return u(uint64(tm.UnixMilli())) }
	want := []pyPayload{
		{File: "00.bin", Metrics: []pyMetric{
			{Name: s("bdSeq"), Datatype: s("Int64"), Field: s("long_value"), Value: s("200")},
		}},
		{File: "01.bin", Timestamp: ms(t0), Seq: u(0), Metrics: []pyMetric{
			{Name: s("bdSeq"), Timestamp: ms(t0), Datatype: s("Int64"), Field: s("long_value"), Value: s("200")},
			{Name: s("Node Control/Rebirth"), Alias: u(1), Timestamp: ms(t0), Datatype: s("Boolean"), Field: s("boolean_value"), Value: s("false")},
			{Name: s("Node Info/Backlog"), Alias: u(2), Timestamp: ms(t0), Datatype: s("UInt64"), Field: s("long_value"), Value: s("12")},
			{Name: s("Node Info/Version"), Alias: u(3), Timestamp: ms(t0), Datatype: s("String"), Field: s("string_value"), Value: s("0.9.0")},
		}},
		{File: "02.bin", Timestamp: ms(t1), Seq: u(1), Metrics: []pyMetric{
			{Name: s("temperature"), Alias: u(16), Timestamp: ms(t0), Datatype: s("Float"), Field: s("float_value"), Value: s("21.5")},
			{Name: s("pressure"), Alias: u(17), Timestamp: ms(t0), Datatype: s("Double"), Field: s("double_value"), Value: s("1.013")},
			{Name: s("pump"), Alias: u(18), Timestamp: ms(t0), Datatype: s("Boolean"), Field: s("boolean_value"), Value: s("false")},
			{Name: s("setpoint"), Alias: u(19), Timestamp: ms(t1), Datatype: s("Double"), Null: yes},
			{Name: s("offset"), Alias: u(20), Timestamp: ms(t0), Datatype: s("Int16"), Field: s("int_value"), Value: s("-300")},
		}},
		{File: "03.bin", Timestamp: ms(t2), Seq: u(2), Metrics: []pyMetric{
			{Alias: u(21), Timestamp: ms(t0), Datatype: s("UInt64"), Historical: yes, Field: s("long_value"), Value: s("18446744073709551615")},
			{Alias: u(22), Timestamp: ms(t1), Datatype: s("String"), Historical: yes, Field: s("string_value"), Value: s("SN-Ä1")},
			{Alias: u(23), Timestamp: ms(t2), Datatype: s("UInt16"), Field: s("int_value"), Value: s("7")},
		}},
		{File: "04.bin", Timestamp: ms(t2), Seq: u(3), Metrics: []pyMetric{
			{Alias: u(2), Timestamp: ms(t2), Datatype: s("UInt64"), Field: s("long_value"), Value: s("0")},
			{Alias: u(3), Timestamp: ms(t2), Datatype: s("String"), Field: s("string_value"), Value: s("0.9.0")},
		}},
		{File: "05.bin", Timestamp: ms(t2), Seq: u(4), Metrics: []pyMetric{}},
		{File: "06.bin", Timestamp: ms(t2), Seq: u(255), Metrics: []pyMetric{
			{Alias: u(19), Timestamp: ms(t2), Datatype: s("Double"), Field: s("double_value"), Value: s("255.0")},
		}},
		{File: "07.bin", Timestamp: ms(t2), Seq: u(0), Metrics: []pyMetric{
			{Alias: u(19), Timestamp: ms(t2), Datatype: s("Double"), Field: s("double_value"), Value: s("256.0")},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded by Python (-want +got):\n%s", diff)
	}
}
