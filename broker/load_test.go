package broker

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A minimal MQTT 5 client that pipelines: the load test must measure the
// broker, not a client library's per-message overhead.
type rawClient struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	w    *bufio.Writer
}

func dialRawClient(t *testing.T, addr, id string, receiveMax uint16) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 64<<10)}
	t.Cleanup(func() { _ = conn.Close() })
	props := []byte{0x21, byte(receiveMax >> 8), byte(receiveMax)} // Receive Maximum
	body := append(mqttString("MQTT"), 5, 0x02, 0, 60, byte(len(props)))
	body = append(append(body, props...), mqttString(id)...)
	c.send(packet(0x10, body), true)
	if typ, _ := c.read(t); typ>>4 != 2 {
		t.Fatalf("%s: expected CONNACK, got type %d", id, typ)
	}
	return c
}

func (c *rawClient) send(p []byte, flush bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.w.Write(p)
	if flush {
		_ = c.w.Flush()
	}
}

func (c *rawClient) flush() {
	c.wmu.Lock()
	_ = c.w.Flush()
	c.wmu.Unlock()
}

// read returns the packet type and the rest of the packet after the fixed header.
func (c *rawClient) read(t *testing.T) (byte, []byte) {
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil
	}
	n, mul := 0, 1
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return 0, nil
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return 0, nil
	}
	return h, body
}

func ack(typ byte, id uint16) []byte { return []byte{typ, 2, byte(id >> 8), byte(id)} }

// subscribe subscribes and then receives until stop, acknowledging as a
// correct MQTT 5 receiver does (QoS 2: a PUBLISH whose packet id has not been
// released by PUBREL is a duplicate and is not delivered again). deliver is
// called for every delivered message.
func (c *rawClient) subscribe(t *testing.T, filter string, qos byte, deliver func(payload []byte)) {
	t.Helper()
	body := append([]byte{0, 1, 0}, mqttString(filter)...)
	c.send(packet(0x82, append(body, qos)), true)
	if typ, b := c.read(t); typ != 0x90 || b[len(b)-1] != qos {
		t.Fatalf("SUBACK type %x body %x", typ, b)
	}
	go func() {
		unreleased := map[uint16]bool{}
		for {
			h, b := c.read(t)
			switch h >> 4 {
			case 0:
				return // closed
			case 3: // PUBLISH
				q := (h >> 1) & 3
				tl := int(binary.BigEndian.Uint16(b))
				off := 2 + tl
				var id uint16
				if q > 0 {
					id = binary.BigEndian.Uint16(b[off:])
					off += 2
				}
				pl, n := binary.Uvarint(b[off:]) // property length (varint, small)
				off += n + int(pl)
				payload := b[off:]
				switch q {
				case 1:
					deliver(payload)
					c.send(ack(0x40, id), false)
				case 2:
					if !unreleased[id] {
						unreleased[id] = true
						deliver(payload)
					}
					c.send(ack(0x50, id), false)
				default:
					deliver(payload)
				}
			case 6: // PUBREL
				id := binary.BigEndian.Uint16(b)
				delete(unreleased, id)
				c.send(ack(0x70, id), false)
			}
			if c.r.Buffered() == 0 {
				c.flush()
			}
		}
	}()
}

// publishAll publishes n messages with up to window unacknowledged and
// returns when every one is acknowledged (PUBACK, or PUBCOMP at QoS 2).
func (c *rawClient) publishAll(t *testing.T, topic string, qos byte, n, window int, payload func(i int) []byte) error {
	slots := make(chan uint16, window)
	for i := range window {
		slots <- uint16(i + 1)
	}
	done := make(chan error, 1)
	go func() {
		acked := 0
		for acked < n {
			h, b := c.read(t)
			switch h >> 4 {
			case 0:
				done <- fmt.Errorf("connection closed after %d acks", acked)
				return
			case 4, 7: // PUBACK, PUBCOMP
				if len(b) > 2 && b[2] >= 0x80 {
					done <- fmt.Errorf("negative ack 0x%x", b[2])
					return
				}
				acked++
				slots <- binary.BigEndian.Uint16(b)
			case 5: // PUBREC
				c.send(ack(0x62, binary.BigEndian.Uint16(b)), true)
			}
		}
		done <- nil
	}()
	for i := range n {
		id := <-slots
		body := append(mqttString(topic), byte(id>>8), byte(id), 0) // no properties
		c.send(packet(0x30|qos<<1, append(body, payload(i)...)), len(slots) == 0 || i == n-1)
	}
	c.flush()
	return <-done
}

// publishConcurrently runs publishers clients "pub<p>", each publishing
// perPublisher messages payload(p, i) on load/<p> with window in flight,
// and fails the test unless every one is acknowledged.
func publishConcurrently(t *testing.T, addr string, publishers, perPublisher, window int, qos byte, payload func(p, i int) []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		c := dialRawClient(t, addr, fmt.Sprintf("pub%d", p), 65535)
		wg.Go(func() {
			errs <- c.publishAll(t, fmt.Sprintf("load/%d", p), qos, perPublisher, window, func(i int) []byte { return payload(p, i) })
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
	}
}

// loadCfg is anonCfg for the load tests, with a longer delivery_wait: under
// -race on a shared machine the broker runs tens of times slower than a
// release build, and a subscriber that keeps up as fast as that allows can
// take fewer than max_queued_messages/16 messages in the default 1s. These
// tests are about pacing publishers, not about giving up on a subscriber
// (fieldgate-bench checks the defaults at full speed).
func loadCfg() Config {
	cfg := anonCfg()
	cfg.Limits.DeliveryWait = durationOf(10 * time.Second)
	return cfg
}

// TestDeliveryAllQoS is the regression test for lost QoS 1/2 messages: four
// publishers send 10,000 messages each with 100 in flight; one subscriber
// with Receive Maximum 100 (the case mochi's deferred sending broke) must
// receive every one, at QoS 2 exactly once.
func TestDeliveryAllQoS(t *testing.T) {
	const publishers, perPublisher, window = 4, 10000, 100
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			r := start(t, loadCfg(), t.TempDir(), nil)
			addr := r.addr(0)
			var (
				mu   sync.Mutex
				seen = make(map[uint64]int, publishers*perPublisher)
				all  = make(chan struct{})
			)
			sub := dialRawClient(t, addr, "sub", window)
			sub.subscribe(t, "load/#", qos, func(p []byte) {
				mu.Lock()
				defer mu.Unlock()
				seen[binary.BigEndian.Uint64(p)]++
				if len(seen) == publishers*perPublisher && seen[binary.BigEndian.Uint64(p)] == 1 {
					close(all)
				}
			})
			publishConcurrently(t, addr, publishers, perPublisher, window, qos, func(p, i int) []byte {
				return binary.BigEndian.AppendUint64(nil, uint64(p)<<32|uint64(i))
			})
			select {
			case <-all:
			case <-time.After(time.Minute):
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != publishers*perPublisher {
				t.Fatalf("received %d distinct messages, want %d; stats %+v", len(seen), publishers*perPublisher, r.Stats())
			}
			for k, n := range seen {
				if qos == 2 && n != 1 {
					t.Fatalf("QoS 2 message %x delivered %d times", k, n)
				}
			}
			if st := r.Stats(); st.MessagesDropped != 0 {
				t.Errorf("Stats.MessagesDropped = %d, want 0", st.MessagesDropped)
			}
		})
	}
}

// publishQoS0 sends n QoS 0 publishes as fast as the connection takes them,
// then one QoS 1 publish, and returns once that is acknowledged: the broker
// reads a client's packets in order, so by then it has handled all of them.
func (c *rawClient) publishQoS0(t *testing.T, topic string, n int, payload func(i int) []byte) {
	t.Helper()
	for i := range n {
		c.send(packet(0x30, append(append(mqttString(topic), 0), payload(i)...)), false) // no properties
	}
	c.send(packet(0x32, append(append(mqttString(topic), 0, 1, 0), "barrier"...)), true)
	for {
		h, b := c.read(t)
		if h == 0 {
			t.Fatal("publisher's connection closed before the barrier's PUBACK")
		}
		if h>>4 == 4 && binary.BigEndian.Uint16(b) == 1 {
			return
		}
	}
}

// TestDeliveryQoS0SlowSubscriber: four publishers blast 5,000 QoS 0 messages
// each at one subscriber that reads slower than they publish. The
// subscriber's write queue (max_queued_messages 32 + max_inflight 16) is
// far smaller than the burst; publishers wait for room in it instead of the
// broker dropping messages, so every message arrives, in order per
// publisher.
func TestDeliveryQoS0SlowSubscriber(t *testing.T) {
	const publishers, perPublisher = 4, 5000
	cfg := anonCfg()
	cfg.Limits.MaxInflight, cfg.Limits.MaxQueuedMessages = 16, 32
	r := start(t, cfg, t.TempDir(), nil)
	addr := r.addr(0)
	var (
		mu   sync.Mutex
		next = make(map[uint32]uint32)
		got  int
		bad  error
		all  = make(chan struct{})
	)
	sub := dialRawClient(t, addr, "slow", 100)
	sub.subscribe(t, "q0/#", 0, func(p []byte) {
		if len(p) != 8 {
			return // a barrier
		}
		mu.Lock()
		defer mu.Unlock()
		pub, seq := binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
		if seq != next[pub] && bad == nil {
			bad = fmt.Errorf("publisher %d: got message %d, want %d", pub, seq, next[pub])
		}
		next[pub] = seq + 1
		got++
		if got%500 == 0 {
			time.Sleep(time.Millisecond) // slower than the publishers
		}
		if got == publishers*perPublisher {
			close(all)
		}
	})
	var wg sync.WaitGroup
	for p := range publishers {
		c := dialRawClient(t, addr, fmt.Sprintf("pub%d", p), 100)
		wg.Go(func() {
			c.publishQoS0(t, fmt.Sprintf("q0/%d", p), perPublisher, func(i int) []byte {
				return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(p)), uint32(i))
			})
		})
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(time.Minute):
	}
	mu.Lock()
	defer mu.Unlock()
	if bad != nil {
		t.Fatal(bad)
	}
	st := r.Stats()
	if got != publishers*perPublisher || st.MessagesDropped != 0 {
		t.Fatalf("received %d of %d, %d dropped; stats %+v", got, publishers*perPublisher, st.MessagesDropped, st)
	}
	if st.DeliveryWaits == 0 {
		t.Errorf("no publisher waited for the subscriber's write queue; stats %+v", st)
	}
}

// A QoS 0 subscriber that stops reading slows publishers for at most
// limits.delivery_wait once; then they stop waiting for it (it drops what
// does not fit), and other subscribers still get everything.
func TestStalledQueueDoesNotBlockPublishers(t *testing.T) {
	r, healthy := stuckAndGood(t, 50*time.Millisecond, "s/#")
	waitFor(t, "both subscriptions", func() bool { return len(r.srv.Load().Topics.Subscribers("s/x").Subscriptions) == 2 })
	const n = 400
	publishBig(t, r, "s/x", n)
	waitFor(t, "the healthy subscriber's messages", func() bool { return healthy() == n+1 }) // and the barrier
	st := r.Stats()
	if st.DeliveryWaitTimeout != 1 {
		t.Fatalf("DeliveryWaitTimeout = %d, want 1 (publishers stop waiting for a stalled subscriber); stats %+v", st.DeliveryWaitTimeout, st)
	}
	if st.MessagesDropped == 0 {
		t.Errorf("the stuck subscriber dropped nothing: it was never full; stats %+v", st)
	}
}

// TestMochiInternals: the fields of mochi that mochi.go reaches are found
// in this version of mochi, and the write queue the waits read is the
// client's, with the capacity the limits give it.
func TestMochiInternals(t *testing.T) {
	if !outboundOK {
		t.Fatal("mochi's ClientState has no outbound queue of type chan *packets.Packet: write-queue back-pressure is off")
	}
	if !outbufOK {
		t.Fatal("mochi's ClientConnection has no outbuf of type *bytes.Buffer: write coalescing is off")
	}
	cfg := anonCfg()
	cfg.Limits.MaxInflight, cfg.Limits.MaxQueuedMessages = 16, 40
	r := start(t, cfg, t.TempDir(), nil)
	dialRawClient(t, r.addr(0), "c", 100)
	var q chan *packets.Packet
	waitFor(t, "the client's flow", func() bool {
		cl, ok := r.srv.Load().Clients.Get("c")
		if !ok {
			return false
		}
		f, ok := r.flows.Load(cl)
		if ok {
			q = f.(*flow).out
		}
		return ok
	})
	cl, _ := r.srv.Load().Clients.Get("c")
	if q == nil || q != outboundQueue(cl) || cap(q) != 56 {
		t.Fatalf("flow's queue %p (cap %d), client's %p; want the client's, cap 56", q, cap(q), outboundQueue(cl))
	}
}

// A shared-subscription member that stopped reading is not picked once its
// write queue fills: QoS 0 messages go to the member that reads, and none
// is dropped or waits out delivery_wait.
func TestSharedGroupSkipsFullMember(t *testing.T) {
	r, good := stuckAndGood(t, 10*time.Second, "$share/g/s/#")
	waitFor(t, "both members", func() bool { return len(r.srv.Load().Topics.Subscribers("s/x").Shared["$share/g/s/#"]) == 2 })
	publishBig(t, r, "s/x", 400)
	st := r.Stats()
	if st.MessagesDropped != 0 || st.DeliveryWaitTimeout != 0 {
		t.Fatalf("%d dropped, %d waits timed out; want none (the group's other member reads); stats %+v", st.MessagesDropped, st.DeliveryWaitTimeout, st)
	}
	if good() == 0 {
		t.Fatal("the reading member received nothing")
	}
}

// stuckAndGood starts a broker whose clients have a 48-packet write queue
// and the given delivery_wait, a client "stuck" that subscribes to filter at
// QoS 0 and never reads again, and a client "good" on the same filter that
// reads everything; good reports how many messages it received.
func stuckAndGood(t *testing.T, wait time.Duration, filter string) (r *running, good func() int) {
	t.Helper()
	cfg := anonCfg()
	cfg.Limits.DeliveryWait = &wait
	cfg.Limits.MaxInflight, cfg.Limits.MaxQueuedMessages = 16, 32
	r = start(t, cfg, t.TempDir(), nil)
	stuck := dialRawClient(t, r.addr(0), "stuck", 100)
	body := append([]byte{0, 1, 0}, mqttString(filter)...)
	stuck.send(packet(0x82, append(body, 0)), true)
	var mu sync.Mutex
	n := 0
	dialRawClient(t, r.addr(0), "good", 100).subscribe(t, filter, 0, func([]byte) {
		mu.Lock()
		n++
		mu.Unlock()
	})
	return r, func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// publishBig publishes n QoS 0 messages of 64 KiB (and a barrier, see
// publishQoS0): enough to fill a stuck subscriber's socket buffers and then
// its write queue.
func publishBig(t *testing.T, r *running, topic string, n int) {
	t.Helper()
	big := make([]byte, 64<<10)
	dialRawClient(t, r.addr(0), "pub", 100).publishQoS0(t, topic, n, func(int) []byte { return big })
}
