package sparkplug

import (
	"testing"
)

// BenchmarkDData builds (encodes and sequences) one DDATA with 8 metrics,
// the per-message work of the Sparkplug drain loop.
func BenchmarkDData(b *testing.B) {
	n, err := NewNode(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, testDevices())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := n.Connect(0); err != nil {
		b.Fatal(err)
	}
	if _, err := n.NBirth(t0, NodeMetrics{}); err != nil {
		b.Fatal(err)
	}
	samples := []Sample{
		{Point: "temperature", Value: 21.5, Time: t0},
		{Point: "pressure", Value: 1.013, Time: t0},
		{Point: "pump", Value: true, Time: t0},
		{Point: "setpoint", Value: 40.0, Time: t0},
		{Point: "offset", Value: int64(-3), Time: t0},
		{Point: "temperature", Value: 21.6, Time: t1, Historical: true},
		{Point: "pressure", Value: 1.014, Time: t1, Historical: true},
		{Point: "pump", Value: false, Time: t1, Historical: true},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.DData("boiler", t1, samples); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommand decodes a DCMD with two writes.
func BenchmarkDecodeCommand(b *testing.B) {
	n, err := NewNode(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, testDevices())
	if err != nil {
		b.Fatal(err)
	}
	payload := cmdPayload(b,
		&Payload_Metric{Name: ptr("pump"), Value: &Payload_Metric_BooleanValue{BooleanValue: true}},
		&Payload_Metric{Alias: ptr(uint64(19)), Value: &Payload_Metric_DoubleValue{DoubleValue: 21.5}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.DecodeCommand("spBv1.0/plant1/DCMD/gw-01/boiler", payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommandLargest decodes the largest accepted payload made
// of empty metrics (the worst case an upstream can send that is decoded).
func BenchmarkDecodeCommandLargest(b *testing.B) {
	n, err := NewNode(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, testDevices())
	if err != nil {
		b.Fatal(err)
	}
	var payload []byte
	for range maxCommandMetrics {
		payload = append(payload, 0x12, 0x00) // metrics: an empty Metric
	}
	b.ReportAllocs()
	for b.Loop() {
		c, err := n.DecodeCommand("spBv1.0/plant1/DCMD/gw-01/boiler", payload)
		if err != nil || len(c.Rejected) != maxCommandMetrics {
			b.Fatalf("rejected %d, err %v", len(c.Rejected), err)
		}
	}
}

// BenchmarkDecodeCommandRefused: a maximal payload of empty metrics is
// refused by counting, before anything is allocated for it.
func BenchmarkDecodeCommandRefused(b *testing.B) {
	n, err := NewNode(Config{GroupID: "plant1", EdgeNodeID: "gw-01"}, testDevices())
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 0, maxCommandPayload)
	for len(payload)+2 <= maxCommandPayload {
		payload = append(payload, 0x12, 0x00)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.DecodeCommand("spBv1.0/plant1/DCMD/gw-01/boiler", payload); err == nil {
			b.Fatal("accepted")
		}
	}
}
