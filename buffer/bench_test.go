package buffer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	rssChildEnv = "FIELDGATE_BUFFER_RSS_CHILD" // "fill" or "drain"
	rssDirEnv   = "FIELDGATE_BUFFER_RSS_DIR"
	benchRecord = 200 // bytes, a typical sensor reading with its topic
)

func benchConfig() Config {
	c := testConfig()
	c.MaxBytes = 4 * GiB
	return c
}

// BenchmarkAppend64 measures durable ingest with 64 concurrent appenders
// (each Append returns only after its fsync). Reported: appends/s and
// records/fsync (the group-commit factor).
//
//	go test -run '^$' -bench Append64 -benchtime 200000x ./buffer/
func BenchmarkAppend64(b *testing.B) {
	q, err := Open(b.TempDir(), benchConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	data := bytes.Repeat([]byte{'x'}, benchRecord)
	const writers = 64
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := q.Append(context.Background(), data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	st := q.Stats()
	b.ReportMetric(float64(b.N)/el.Seconds(), "appends/s")
	b.ReportMetric(float64(st.Appended)/float64(max(st.Syncs, 1)), "records/fsync")

}

// BenchmarkAppendAsync64 measures durable ingest the way the broker does it
// for one client: one goroutine queues records with AppendBatchAsync and
// keeps 64 of them in flight, waiting for the oldest before queuing more.
//
//	go test -run '^$' -bench AppendAsync64 -benchtime 300000x ./buffer/
func BenchmarkAppendAsync64(b *testing.B) {
	q, err := Open(b.TempDir(), benchConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	data := [][]byte{bytes.Repeat([]byte{'x'}, benchRecord)}
	const window = 64
	ring := make([]*Pending, 0, window)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if len(ring) == window {
			if _, err := ring[0].Wait(); err != nil {
				b.Fatal(err)
			}
			ring = ring[1:]
		}
		p, err := q.AppendBatchAsync(data)
		if err != nil {
			b.Fatal(err)
		}
		ring = append(ring, p)
	}
	for _, p := range ring {
		if _, err := p.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(start)
	b.StopTimer()
	st := q.Stats()
	b.ReportMetric(float64(b.N)/el.Seconds(), "appends/s")
	b.ReportMetric(float64(st.Appended)/float64(max(st.Syncs, 1)), "records/fsync")
}

// BenchmarkDrain1M fills the queue with 1M records of 200 bytes, then
// measures reading and acking all of them in pages of 1000.
//
//	go test -run '^$' -bench Drain1M -benchtime 1x ./buffer/
func BenchmarkDrain1M(b *testing.B) {
	const n = 1_000_000
	for range b.N {
		b.StopTimer()
		q, err := Open(b.TempDir(), benchConfig(), nil)
		if err != nil {
			b.Fatal(err)
		}
		fill(b, q, n)
		b.StartTimer()
		start := time.Now()
		got := drain(b, q)
		el := time.Since(start)
		b.StopTimer()
		if got != n {
			b.Fatalf("drained %d, want %d", got, n)
		}
		if st := q.Stats(); st.Messages != 0 {
			b.Fatalf("after drain: %+v", st)
		}
		b.ReportMetric(el.Seconds(), "s/drain")
		b.ReportMetric(n/el.Seconds(), "records/s")
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func fill(tb testing.TB, q *Queue, n int) {
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = bytes.Repeat([]byte{byte('a' + i%26)}, benchRecord)
	}
	for i := 0; i < n; i += len(batch) {
		if _, err := q.AppendBatch(context.Background(), batch[:min(len(batch), n-i)]); err != nil {
			tb.Fatal(err)
		}
	}
}

func drain(tb testing.TB, q *Queue) int {
	var after uint64
	got := 0
	for {
		recs, err := q.Read(after, 1000, 0)
		if err != nil {
			tb.Fatal(err)
		}
		if len(recs) == 0 {
			return got
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := q.Ack(seqs...); err != nil {
			tb.Fatal(err)
		}
		got += len(recs)
		after = seqs[len(seqs)-1]
	}
}

// BenchmarkRSS1M runs two child processes (this test binary re-executed):
// the first ingests 1M records of 200 bytes through 64 concurrent Appends
// and stays holding the backlog; the second reopens the 1M backlog and
// drains it with Read+Ack. Each reports its peak RSS (VmHWM from
// /proc/self/status, which includes badger's mmap'd files that were
// touched) and its anonymous RSS at the end (RssAnon).
//
//	go test -run '^$' -bench RSS1M -benchtime 1x ./buffer/
func BenchmarkRSS1M(b *testing.B) {
	for range b.N {
		dir := b.TempDir()
		for _, phase := range []string{"fill", "drain"} {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			// GOMEMLIMIT as the gateway should run (see the report).
			cmd.Env = append(os.Environ(), rssChildEnv+"="+phase, rssDirEnv+"="+dir, "GOMEMLIMIT=80MiB")
			out, err := cmd.Output()
			if err != nil {
				b.Fatalf("%s child: %v\n%s", phase, err, out)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				f := strings.Fields(line)
				if len(f) != 2 {
					continue
				}
				v, err := strconv.ParseFloat(f[1], 64)
				if err != nil {
					b.Fatalf("child said %q", line)
				}
				b.ReportMetric(v, phase+"-"+f[0])
			}
		}
	}
}

// rssChild is the body of BenchmarkRSS1M's child processes.
func rssChild(phase string) {
	dir := os.Getenv(rssDirEnv)
	q, err := Open(dir, benchConfig(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var peakAnon, peakFile float64
	sampleDone := make(chan struct{})
	stopSample := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			s := procStatus()
			peakAnon, peakFile = max(peakAnon, s["RssAnon"]), max(peakFile, s["RssFile"])
			select {
			case <-stopSample:
				return
			case <-t.C:
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- q.Run(ctx) }()
	start := time.Now()
	switch phase {
	case "fill":
		const n, writers = 1_000_000, 64
		data := bytes.Repeat([]byte{'x'}, benchRecord)
		var next atomic.Int64
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for next.Add(1) <= n {
					if _, err := q.Append(context.Background(), data); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
				}
			})
		}
		wg.Wait()
	case "drain":
		if st := q.Stats(); st.Messages != 1_000_000 {
			fmt.Fprintf(os.Stderr, "backlog %d, want 1000000\n", st.Messages)
			os.Exit(4)
		}
		drain(fatalTB{}, q)
	}
	el := time.Since(start)
	cancel()
	<-runDone
	close(stopSample)
	<-sampleDone
	st := q.Stats()
	status := procStatus()
	fmt.Printf("peakRssAnon-MB %.1f\npeakRssFile-MB %.1f\n", peakAnon/1024, peakFile/1024)
	ms := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(ms)
	fmt.Printf("VmHWM-MB %.1f\nRssAnon-MB %.1f\nRssFile-MB %.1f\nseconds %.2f\ndisk-MB %.1f\ngo-total-MB %.1f\ngo-heap-MB %.1f\n",
		status["VmHWM"]/1024, status["RssAnon"]/1024, status["RssFile"]/1024, el.Seconds(), float64(st.DiskBytes)/(1<<20),
		float64(ms[0].Value.Uint64())/(1<<20), float64(ms[1].Value.Uint64())/(1<<20))

	if err := q.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(5)
	}
}

// procStatus returns the kB fields of /proc/self/status.
func procStatus() map[string]float64 {
	m := map[string]float64{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(v)
		if ok && len(fs) == 2 && fs[1] == "kB" {
			n, _ := strconv.ParseFloat(fs[0], 64)
			m[k] = n
		}
	}
	return m
}

// fatalTB lets drain run outside a test.
type fatalTB struct{ testing.TB }

func (fatalTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(6)
}
