package broker

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// fakeConn records what batchConn writes and serves reads from a channel.
type fakeConn struct {
	net.Conn // nil: methods not overridden are not used

	mu        sync.Mutex
	writes    [][]byte
	deadlines []time.Time
	closed    bool
	atRead    []int         // len(writes) when each Read was called
	gate      chan struct{} // when not nil, Write waits for it to close
	reads     chan []byte
}

func newFakeConn() *fakeConn { return &fakeConn{reads: make(chan []byte, 10)} }

func (f *fakeConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	f.atRead = append(f.atRead, len(f.writes))
	f.mu.Unlock()
	return copy(p, <-f.reads), nil
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, bytes.Clone(p))
	return len(p), nil
}

func (f *fakeConn) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func (f *fakeConn) SetDeadline(t time.Time) error {
	f.mu.Lock()
	f.deadlines = append(f.deadlines, t)
	f.mu.Unlock()
	return nil
}

func (f *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

func (f *fakeConn) written() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.writes...)
}

func puback(id byte) []byte { return []byte{0x40, 2, 0, id} }

var publish = []byte{0x30, 5, 0, 1, 't', 'x', 'y'}

// readOnce makes the reading goroutine active: it has input to process.
func readOnce(t *testing.T, f *fakeConn, c *batchConn) {
	t.Helper()
	f.reads <- []byte{0xc0, 0}
	if n, err := c.Read(make([]byte, 16)); n != 2 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
}

func TestBatchConnWritesHeldAcksBeforeReading(t *testing.T) {
	f := newFakeConn()
	c := newBatchConn(f)
	readOnce(t, f, c)
	for id := range byte(3) {
		if n, err := c.Write(puback(id)); n != 4 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if w := f.written(); len(w) != 0 {
		t.Fatalf("acknowledgements written while the reader was active: %x", w)
	}
	readOnce(t, f, c)
	want := [][]byte{append(append(puback(0), puback(1)...), puback(2)...)}
	if w := f.written(); fmt.Sprint(w) != fmt.Sprint(want) {
		t.Fatalf("written %x, want %x (one write)", w, want)
	}
	if f.atRead[1] != 1 {
		t.Fatalf("second Read started after %d writes, want 1 (held acks first)", f.atRead[1])
	}
}

func TestBatchConnKeepsOrder(t *testing.T) {
	f := newFakeConn()
	c := newBatchConn(f)
	readOnce(t, f, c)
	_, _ = c.Write(puback(1))
	_, _ = c.Write(publish) // not an acknowledgement: written at once, after the held bytes
	_, _ = c.Write(puback(2))
	_ = c.Close() // writes what is still held
	want := [][]byte{append(puback(1), publish...), puback(2)}
	if w := f.written(); fmt.Sprint(w) != fmt.Sprint(want) {
		t.Fatalf("written %x, want %x", w, want)
	}
	if !f.closed {
		t.Fatal("not closed")
	}
}

func TestBatchConnWritesAtOnceWhenReaderIdle(t *testing.T) {
	f := newFakeConn()
	c := newBatchConn(f)
	_, _ = c.Write(puback(1)) // the reader has not read anything: nothing to batch with
	readOnce(t, f, c)
	c.release() // as policy.waitClients does before blocking
	_, _ = c.Write(puback(2))
	if w := f.written(); len(w) != 2 {
		t.Fatalf("written %x, want both acknowledgements at once", w)
	}
}

// An acknowledgement is never held longer than maxHold, even when the
// reading goroutine stays busy (here: never reads again).
func TestBatchConnHoldsAtMostMaxHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConn()
		c := newBatchConn(f)
		readOnce(t, f, c)
		_, _ = c.Write(puback(1))
		time.Sleep(maxHold - time.Nanosecond)
		synctest.Wait()
		if w := f.written(); len(w) != 0 {
			t.Fatalf("written before maxHold: %x", w)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if w := f.written(); len(w) != 1 {
			t.Fatalf("after maxHold written %x, want the acknowledgement", w)
		}
		_ = c.Close()
	})
}

// The reading goroutine never waits for a write blocked on the network (a
// client that does not read while it writes would otherwise deadlock with
// the broker). The acknowledgement held meanwhile goes out within maxHold.
func TestBatchConnReadDoesNotWaitForBlockedWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConn()
		c := newBatchConn(f)
		readOnce(t, f, c)
		gate := make(chan struct{})
		f.mu.Lock()
		f.gate = gate
		f.mu.Unlock()
		done := make(chan struct{})
		go func() {
			_, _ = c.Write(publish) // blocks in the network write
			close(done)
		}()
		synctest.Wait()
		_, _ = c.Write(puback(1)) // held: the reader is active
		readOnce(t, f, c)         // must not block on the writer
		close(gate)
		<-done
		time.Sleep(maxHold) // the reader is active again: the ack goes out after maxHold at the latest
		synctest.Wait()
		want := [][]byte{publish, puback(1)}
		if w := f.written(); fmt.Sprint(w) != fmt.Sprint(want) {
			t.Fatalf("written %x, want %x", w, want)
		}
		_ = c.Close()
	})
}

func TestBatchConnDeadline(t *testing.T) {
	f := newFakeConn()
	c := newBatchConn(f)
	t0 := time.Now().Add(time.Minute).Round(0) // no monotonic reading, for comparisons
	const s = deadlineSlack
	steps := []struct {
		set  time.Time
		want []time.Time // what reaches the connection; nil: nothing
	}{
		{t0, []time.Time{t0.Add(s)}},
		{t0.Add(s / 2), nil},                          // within the armed deadline: skipped
		{t0.Add(s + 1), []time.Time{t0.Add(2*s + 1)}}, // beyond it
		{t0, []time.Time{t0}},                         // earlier than armed by more than the slack
		{time.Time{}, []time.Time{{}}},                // no deadline
		{time.Time{}, nil},                            // still none: skipped
		{t0.Add(3 * s), []time.Time{t0.Add(4 * s)}},
		{t0.Add(3*s + s/2), nil},
	}
	for i, st := range steps {
		f.deadlines = nil
		_ = c.SetDeadline(st.set)
		if fmt.Sprint(f.deadlines) != fmt.Sprint(st.want) {
			t.Fatalf("step %d: SetDeadline(%v) set %v, want %v", i, st.set, f.deadlines, st.want)
		}
	}
}

// A plan is cached per topic and follows subscriptions made and removed
// over the network.
func TestRoomPlanFollowsSubscriptions(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	srv := r.srv.Load()
	plan := func() string {
		p := r.rooms.plan(srv, "room/x")
		return fmt.Sprint(p.queues, p.queueGroups)
	}
	if got := plan(); got != "[] []" {
		t.Fatalf("plan before any subscription: %s", got)
	}
	sub := dialRawClient(t, r.addr(0), "sub", 10)
	body := append([]byte{0, 1, 0}, mqttString("room/#")...)
	sub.send(packet(0x82, append(body, 1)), true)
	waitFor(t, "subscriber in the plan", func() bool { return plan() == "[sub] []" })
	body = append([]byte{0, 2, 0}, mqttString("room/#")...)
	sub.send(packet(0xa2, body), true) // UNSUBSCRIBE
	waitFor(t, "subscriber out of the plan", func() bool { return plan() == "[] []" })
}

func TestRoomCache(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{})
	var c roomCache
	srv.Topics.Subscribe("a", packets.Subscription{Filter: "t/#", Qos: 1})
	srv.Topics.Subscribe("zero", packets.Subscription{Filter: "t/#", Qos: 0})
	srv.Topics.Subscribe("s1", packets.Subscription{Filter: "$share/g/t/+", Qos: 2})
	srv.Topics.Subscribe("s2", packets.Subscription{Filter: "$share/g/t/+", Qos: 0})
	show := func() string {
		p := c.plan(srv, "t/x")
		q := slices.Sorted(slices.Values(p.queues))
		var g [][]string
		for _, ids := range p.queueGroups {
			g = append(g, slices.Sorted(slices.Values(ids)))
		}
		return fmt.Sprint(q, g)
	}
	want := "[a zero] [[s1 s2]]" // every subscriber's queue is waited for, whatever its QoS
	if got := show(); got != want {
		t.Fatalf("plan %s, want %s", got, want)
	}
	srv.Topics.Subscribe("b", packets.Subscription{Filter: "t/x", Qos: 1})
	if got := show(); got != want {
		t.Fatalf("plan %s: cached until invalidated", got)
	}
	c.invalidate()
	if got := show(); got != "[a b zero] [[s1 s2]]" {
		t.Fatalf("plan %s after invalidate, want a, b and zero", got)
	}
}
