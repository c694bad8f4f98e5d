package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkIngest drives the shape of cmd/fieldgate-bench's ingest scenario
// (QoS 1 publishes with 64 in flight in all, split over publishers, no
// subscriber, every message queued by an asynchronous Ingress and
// acknowledged once "durable") over loopback TCP against an in-process
// broker, with a simulated group commit instead of the disk: a committer
// takes every message queued so far, waits commitDelay (an fsync) and
// completes them together. What it measures is the broker's CPU per
// durable message, without the buffer's:
//
//	go test ./broker -run '^$' -bench Ingest -benchtime 300000x -cpuprofile cpu.out
//
// b.N is the number of publishes; cpu-µs/msg is the CPU of the whole
// process (broker, minimal MQTT 3.1.1 clients and the simulated store) per
// acknowledged publish.
//
// The "persistent" case has publishers with persistent sessions (MQTT 3.1.1
// clean session false), whose in-flight state mochi keeps in its store.
func BenchmarkIngest(b *testing.B) {
	for _, pubs := range []int{8, 1} {
		b.Run(fmt.Sprintf("pubs%d", pubs), func(b *testing.B) { benchIngest(b, pubs, 64/pubs, true) })
	}
	b.Run("pubs8-persistent", func(b *testing.B) { benchIngest(b, 8, 8, false) })
}

func benchIngest(b *testing.B, pubs, window int, clean bool) {
	const payload = 64
	st := newBenchStore(300 * time.Microsecond)
	b.Cleanup(st.close) // after the broker has stopped
	br, err := New(anonCfg(), Options{DataDir: b.TempDir(), Logger: testLogger(b), Ingress: st.ingress})
	if err != nil {
		b.Fatal(err)
	}
	r := startBroker(b, br)
	addr := r.addr(0)
	var conns []*benchConn
	for i := range pubs {
		id := fmt.Sprintf("pub%d", i)
		connect := rawConnect("MQTT", 4, id)
		if !clean {
			connect[9] = 0 // connect flags: clean session off
		}
		conns = append(conns, dialBenchConnect(b, addr, id, connect, window))
	}
	per := b.N / pubs
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { c.publishN(b, fmt.Sprintf("ingest/p%d", i), 1, per, payload) })
	}
	wg.Wait()
	el := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	n := per * pubs
	if got := st.count(); got != n {
		b.Errorf("stored %d of %d", got, n)
	}
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(cpu.Seconds()*1e6/float64(max(n, 1)), "cpu-µs/msg")
	for _, c := range conns {
		c.close()
	}
}

// startBroker runs b until the benchmark ends.
func startBroker(tb testing.TB, b *Broker) *running {
	tb.Helper()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- b.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	select {
	case <-b.Ready():
	case err := <-done:
		done <- err
		tb.Fatalf("Run returned before Ready: %v", err)
	}
	return &running{Broker: b, cancel: cancel, done: done}
}

// benchStore is a simulated group-committing store for BenchmarkIngest.
type benchStore struct {
	ch    chan *benchPending
	delay time.Duration
	mu    sync.Mutex
	n     int
	done  chan struct{}
}

type benchPending struct{ done chan struct{} }

func (p *benchPending) Done() <-chan struct{} { return p.done }
func (p *benchPending) Err() error            { return nil }

func newBenchStore(delay time.Duration) *benchStore {
	s := &benchStore{ch: make(chan *benchPending, 4096), delay: delay, done: make(chan struct{})}
	go s.run()
	return s
}

func (s *benchStore) ingress(m *Message) (Stored, error) {
	if m.QoS == 0 {
		return nil, nil
	}
	p := &benchPending{done: make(chan struct{})}
	s.ch <- p
	return p, nil
}

func (s *benchStore) run() {
	defer close(s.done)
	var batch []*benchPending
	for p := range s.ch {
		batch = append(batch[:0], p)
	more:
		for {
			select {
			case p, ok := <-s.ch:
				if !ok {
					break more
				}
				batch = append(batch, p)
			default:
				break more
			}
		}
		time.Sleep(s.delay)
		for _, p := range batch {
			close(p.done)
		}
		s.mu.Lock()
		s.n += len(batch)
		s.mu.Unlock()
	}
}

func (s *benchStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *benchStore) close() {
	close(s.ch)
	<-s.done
}
