package bridge

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
)

// BenchmarkDrain measures draining a backlog of FIELDGATE_BENCH_N records
// (default 50,000; the product goal is 1,000,000 in ≤ 25 s) of 64-byte
// QoS 1 messages to a loopback mosquitto, with a window of
// FIELDGATE_BENCH_INFLIGHT (default 256). Reports msgs/s.
//
//	FIELDGATE_BENCH_N=1000000 go test -run '^$' -bench Drain -benchtime 1x ./bridge/
func BenchmarkDrain(b *testing.B) {
	n := 50_000
	if s := os.Getenv("FIELDGATE_BENCH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("FIELDGATE_BENCH_N: %v", err)
		}
		n = v
	}
	inflight := 256
	if s := os.Getenv("FIELDGATE_BENCH_INFLIGHT"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("FIELDGATE_BENCH_INFLIGHT: %v", err)
		}
		inflight = v
	}
	for _, protocol := range []string{"5", "3.1.1"} {
		b.Run("mqtt"+protocol, func(b *testing.B) {
			up := plainMosquitto(b)
			payload := make([]byte, 64)
			var total, cpu time.Duration
			var sysr, sysw int64
			for i := 0; i < b.N; i++ {
				q := openQueue(b, buffer.Config{MaxBytes: 4 << 30})
				cfg := testConfig("mqtt://" + up)
				cfg.Upstream.Protocol = protocol
				cfg.Inflight = inflight
				batch := make([][]byte, 0, 4096)
				for j := range n {
					batch = append(batch, encodeRecord(&record{Accepted: time.Now(), Msg: Message{
						Topic: fmt.Sprintf("sites/gw1/myhome/bench/%d", j%16), QoS: 1, Payload: payload,
					}}))
					if len(batch) == cap(batch) || j == n-1 {
						if _, err := q.AppendBatch(context.Background(), batch); err != nil {
							b.Fatal(err)
						}
						batch = batch[:0]
					}
				}
				br, err := New(cfg, Options{Gateway: "gw1", Queue: q, Logger: testLogger(b)})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				start, cpu0 := time.Now(), cpuTime()
				r0, w0 := syscallCounts()
				go func() { done <- br.Run(ctx) }()
				for br.Stats().Forwarded < uint64(n) {
					time.Sleep(50 * time.Millisecond)
				}
				total += time.Since(start)
				cpu += cpuTime() - cpu0
				r1, w1 := syscallCounts()
				sysr, sysw = sysr+r1-r0, sysw+w1-w0
				b.Logf("window %d", br.Stats().Window)
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/total.Seconds(), "msgs/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(n*b.N), "cpu-µs/msg")
			b.ReportMetric(float64(sysr)/float64(n*b.N), "read-syscalls/msg")
			b.ReportMetric(float64(sysw)/float64(n*b.N), "write-syscalls/msg")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime is the CPU time (user + system) used by this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// syscallCounts returns this process's read and write system calls so far
// (/proc/self/io; zeros where it is missing).
func syscallCounts() (r, w int64) {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			r = n
		case "syscw":
			w = n
		}
	}
	return r, w
}
