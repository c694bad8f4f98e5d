package broker

import (
	"context"
	"runtime"
	"testing"
)

// BenchmarkStartStop measures New + Run until Ready + shutdown on a fresh data
// directory, and reports the heap the idle running broker holds.
func BenchmarkStartStop(b *testing.B) {
	var heap uint64
	for b.Loop() {
		br, err := New(anonCfg(), Options{DataDir: b.TempDir(), Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		go func() { done <- br.Run(ctx) }()
		<-br.Ready()
		b.StopTimer()
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		if after.HeapInuse > before.HeapInuse {
			heap = max(heap, after.HeapInuse-before.HeapInuse)
		}
		b.StartTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(heap)/1024, "idle-heap-KiB")
}

// BenchmarkPublishQoS1 measures an in-process QoS 1 publish delivered to one
// in-process subscriber.
func BenchmarkPublishQoS1(b *testing.B) {
	r := start(b, anonCfg(), b.TempDir(), func(*Message) error { return nil })
	n := 0
	unsub, err := r.Subscribe("bench/#", func(Message) { n++ })
	if err != nil {
		b.Fatal(err)
	}
	defer unsub()
	m := Message{Topic: "bench/x", QoS: 1, Payload: make([]byte, 64), Origin: "bench"}
	for b.Loop() {
		if err := r.Publish(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
	if n != b.N {
		b.Fatalf("delivered %d of %d", n, b.N)
	}
}
