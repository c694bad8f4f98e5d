package devices

import (
	"context"
	"fmt"
	"testing"
	"time"
)

type nopPub struct{}

func (nopPub) Publish(context.Context, Message) error { return nil }

// BenchmarkProcess measures the per-poll cost of the core for a device of
// 100 points whose values all change (engineering value, deadband check,
// JSON payload, publish call).
func BenchmarkProcess(b *testing.B) {
	cfg := DeviceConfig{Name: "d", Driver: "fake", Topic: "bench/{device}/{point}"}
	for i := range 100 {
		cfg.Points = append(cfg.Points, PointConfig{Name: fmt.Sprintf("p%d", i), Scale: f64(0.1), Unit: "°C", Deadband: 0.05})
	}
	s, err := New([]DeviceConfig{cfg}, Options{Gateway: "gw", Drivers: map[string]Driver{"fake": newFakeDriver()}, Publisher: nopPub{}})
	if err != nil {
		b.Fatal(err)
	}
	r := s.runners[0]
	rs := make([]Reading, 100)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range rs {
			rs[j] = Reading{Point: r.dev.Points[j], Value: int64(i%2*10 + j), Time: now}
		}
		r.process(context.Background(), rs, false)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100, "ns/point")
}
