package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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

// BenchmarkThroughput drives the shapes of cmd/fieldgate-bench (publishers ×
// subscribers, every subscriber receiving every publisher's messages, a
// window of 100 QoS 1/2 publishes per publisher, 64-byte payloads) over
// loopback TCP against an in-process broker, so that the broker's share of
// the CPU can be profiled:
//
//	go test ./broker -run '^$' -bench 'Throughput/qos1-4x1' -benchtime 200000x -cpuprofile cpu.out
//
// b.N is the number of publishes, split over the publishers; msgs/s counts
// deliveries; cpu-µs/msg is the CPU of the whole process (broker and
// clients) per delivery, steadier than msgs/s on a busy machine. The clients
// are minimal MQTT 3.1.1 clients that buffer their writes, so that most of
// the CPU is the broker's.
func BenchmarkThroughput(b *testing.B) {
	for _, qos := range []byte{0, 1, 2} {
		for _, sh := range []struct {
			name       string
			pubs, subs int
		}{{"2x2", 2, 2}, {"1x10", 1, 10}, {"4x1", 4, 1}} {
			b.Run(fmt.Sprintf("qos%d-%s", qos, sh.name), func(b *testing.B) {
				benchThroughput(b, qos, sh.pubs, sh.subs)
			})
		}
	}
}

func benchThroughput(b *testing.B, qos byte, pubs, subs int) {
	const window, payload = 100, 64
	r := start(b, anonCfg(), b.TempDir(), nil)
	addr := r.addr(0)
	var subConns []*benchConn
	for i := range subs {
		c := dialBench(b, addr, fmt.Sprintf("sub%d", i), 0)
		c.subscribe(b, "bench/#", qos)
		subConns = append(subConns, c)
	}
	var pubConns []*benchConn
	for i := range pubs {
		pubConns = append(pubConns, dialBench(b, addr, fmt.Sprintf("pub%d", i), window))
	}
	per := b.N / pubs
	want := int64(per * pubs * subs)
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range pubConns {
		wg.Go(func() { c.publishN(b, fmt.Sprintf("bench/p%d", i), qos, per, payload) })
	}
	wg.Wait()
	var got int64
	for last, idle := int64(-1), time.Now(); ; {
		got = 0
		for _, c := range subConns {
			got += c.received.Load()
		}
		if got >= want {
			break
		}
		if got != last {
			last, idle = got, time.Now()
		} else if time.Since(idle) > 5*time.Second {
			break
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	if got != want && qos > 0 { // QoS 0 may be dropped when a subscriber's queue is full
		b.Errorf("delivered %d of %d (stats %+v)", got, want, r.Stats())
	}
	b.ReportMetric(float64(got)/el.Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(100*float64(got)/float64(want), "delivered-%")
	b.ReportMetric(float64(el.Nanoseconds())/float64(max(got, 1)), "ns/msg")
	b.ReportMetric(cpu.Seconds()*1e6/float64(max(got, 1)), "cpu-µs/msg")
	for _, c := range append(subConns, pubConns...) {
		c.close()
	}
}

// processCPU returns the user+system CPU time of the process (broker and
// clients together).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchConn is an MQTT 3.1.1 client for BenchmarkThroughput: a publisher
// keeps a window of packet ids in flight; a subscriber counts deliveries and
// acknowledges them. Writes are flushed when the reader has nothing buffered
// or the publisher's window is full.
type benchConn struct {
	conn     net.Conn
	br       *bufio.Reader
	mu       sync.Mutex
	bw       *bufio.Writer
	ids      chan uint16
	received atomic.Int64
	suback   chan struct{}
	done     chan struct{}
}

func dialBench(b *testing.B, addr, id string, window int) *benchConn {
	b.Helper()
	return dialBenchConnect(b, addr, id, rawConnect("MQTT", 4, id), window)
}

// dialBenchConnect is dialBench with the CONNECT packet to send.
func dialBenchConnect(b *testing.B, addr, id string, connect []byte, window int) *benchConn {
	b.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchConn{
		conn:   conn,
		br:     bufio.NewReaderSize(conn, 64<<10),
		bw:     bufio.NewWriterSize(conn, 64<<10),
		ids:    make(chan uint16, window),
		suback: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	for i := range window {
		c.ids <- uint16(i + 1)
	}
	if _, err := conn.Write(connect); err != nil {
		b.Fatal(err)
	}
	if h, _, err := benchRead(c.br); err != nil || h>>4 != 2 {
		b.Fatalf("%s: CONNACK: header %x, %v", id, h, err)
	}
	go c.read()
	return c
}

func benchRead(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
	}
	p, err := r.Peek(n)
	if err != nil {
		return 0, nil, err
	}
	_, _ = r.Discard(n)
	return h, p, nil
}

func (c *benchConn) read() {
	defer close(c.done)
	var out []byte
	for {
		h, p, err := benchRead(c.br)
		if err != nil {
			return
		}
		out = out[:0]
		switch h >> 4 {
		case 3: // PUBLISH
			c.received.Add(1)
			if q := (h >> 1) & 3; q > 0 {
				off := 2 + int(binary.BigEndian.Uint16(p))
				out = append(out, 0x40+(q-1)*0x10, 2, p[off], p[off+1]) // PUBACK or PUBREC
			}
		case 5: // PUBREC
			out = append(out, 0x62, 2, p[0], p[1])
		case 6: // PUBREL
			out = append(out, 0x70, 2, p[0], p[1])
		case 4, 7: // PUBACK, PUBCOMP
			c.ids <- binary.BigEndian.Uint16(p)
		case 9: // SUBACK
			c.suback <- struct{}{}
		}
		if len(out) > 0 || c.br.Buffered() == 0 {
			c.mu.Lock()
			_, _ = c.bw.Write(out)
			if c.br.Buffered() == 0 {
				_ = c.bw.Flush()
			}
			c.mu.Unlock()
		}
	}
}

func (c *benchConn) subscribe(b *testing.B, filter string, qos byte) {
	c.mu.Lock()
	_, _ = c.bw.Write(packet(0x82, append(append([]byte{0, 1}, mqttString(filter)...), qos)))
	_ = c.bw.Flush()
	c.mu.Unlock()
	select {
	case <-c.suback:
	case <-time.After(10 * time.Second):
		b.Fatal("no SUBACK")
	}
}

// publishN publishes n messages and waits until all are acknowledged.
func (c *benchConn) publishN(b *testing.B, topic string, qos byte, n, size int) {
	pay := make([]byte, size)
	var buf []byte
	window := cap(c.ids)
	for i := range n {
		var id uint16
		if qos > 0 {
			select {
			case id = <-c.ids:
			default:
				c.mu.Lock()
				_ = c.bw.Flush()
				c.mu.Unlock()
				id = <-c.ids
			}
		}
		binary.BigEndian.PutUint64(pay, uint64(i))
		body := append(mqttString(topic), []byte{byte(id >> 8), byte(id)}[:2*min(int(qos), 1)]...)
		buf = packet(0x30|qos<<1, append(body, pay...))
		c.mu.Lock()
		_, _ = c.bw.Write(buf)
		c.mu.Unlock()
	}
	c.mu.Lock()
	_ = c.bw.Flush()
	c.mu.Unlock()
	for qos > 0 && len(c.ids) < window {
		select {
		case <-c.done:
			b.Error("publisher connection closed")
			return
		case <-time.After(time.Millisecond):
		}
	}
}

func (c *benchConn) close() {
	c.mu.Lock()
	_, _ = c.bw.Write([]byte{0xe0, 0})
	_ = c.bw.Flush()
	c.mu.Unlock()
	_ = c.conn.Close()
	<-c.done
}
