package broker

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// windowClient is a raw MQTT 5 subscriber that checks, from the wire, the
// broker's side of flow control: it counts the QoS 1/2 PUBLISH packets it
// holds (received, final acknowledgement not yet sent) and records a
// violation when that count exceeds its Receive Maximum or when a PUBLISH
// arrives with a packet id it holds and without DUP [MQTT-3.3.4-9]
// [MQTT-2.2.1-3]. It acknowledges each message ackDelay after it arrived (0:
// at once; negative: only when ackAll is called), so the broker always has
// more to send than fits.
type windowClient struct {
	t        testing.TB
	conn     net.Conn
	r        *bufio.Reader
	rm       int
	ackDelay time.Duration

	wmu sync.Mutex // writes

	mu       sync.Mutex
	held     map[uint16]byte // packet id → QoS of a message the client holds
	pending  []uint16        // QoS 1 ids, or QoS 2 ids awaiting PUBREC, held back (ackDelay < 0)
	released map[uint16]bool // QoS 2 ids whose PUBREL came
	maxHeld  int
	bad      []string
	msgs     []string // payloads, in arrival order (QoS 2 duplicates with DUP not repeated)
	acks     map[uint16]byte
	subacks  int
	closed   bool
	reason   byte // of a DISCONNECT from the broker
	changed  chan struct{}
}

// dialWindow connects a windowClient with Receive Maximum rm. With
// sessionExpiry > 0 the session is persistent; clean sets Clean Start.
func dialWindow(t testing.TB, addr, id string, rm uint16, sessionExpiry uint32, clean bool) (*windowClient, bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &windowClient{
		t: t, conn: conn, r: bufio.NewReader(conn), rm: int(rm),
		held: map[uint16]byte{}, released: map[uint16]bool{}, acks: map[uint16]byte{},
		changed: make(chan struct{}),
	}
	props := []byte{0x21, byte(rm >> 8), byte(rm)} // Receive Maximum
	if sessionExpiry > 0 {
		props = append(props, 0x11, byte(sessionExpiry>>24), byte(sessionExpiry>>16), byte(sessionExpiry>>8), byte(sessionExpiry))
	}
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	body := append(mqttString("MQTT"), 5, flags, 0, 60, byte(len(props)))
	body = append(append(body, props...), mqttString(id)...)
	c.write(packet(0x10, body))
	h, b := c.readPacket()
	if h>>4 != 2 || len(b) < 2 || b[1] != 0 {
		t.Fatalf("%s: CONNACK %x %x", id, h, b)
	}
	go c.run()
	return c, b[0]&1 == 1
}

func (c *windowClient) write(p []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.conn.Write(p)
}

func (c *windowClient) readPacket() (byte, []byte) {
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

// notify wakes waitUntil; c.mu must be held.
func (c *windowClient) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *windowClient) run() {
	for {
		h, b := c.readPacket()
		c.mu.Lock()
		switch h >> 4 {
		case 0:
			c.closed = true
			c.notify()
			c.mu.Unlock()
			return
		case 3:
			c.onPublish(h, b)
		case 4, 5, 7: // PUBACK, PUBREC, PUBCOMP of the client's own publishes
			id := binary.BigEndian.Uint16(b)
			c.acks[id] = h >> 4
			if h>>4 == 5 {
				go c.write(ack(0x62, id))
			}
		case 9:
			c.subacks++
		case 14: // DISCONNECT
			if len(b) > 0 {
				c.reason = b[0]
			}
		case 6: // PUBREL
			id := binary.BigEndian.Uint16(b)
			if _, ok := c.held[id]; !ok {
				c.bad = append(c.bad, fmt.Sprintf("PUBREL for id %d not held", id))
			}
			c.released[id] = true
			c.finish(id, ack(0x70, id))
		}
		c.notify()
		c.mu.Unlock()
	}
}

// onPublish handles a PUBLISH; c.mu is held.
func (c *windowClient) onPublish(h byte, b []byte) {
	qos, dup := (h>>1)&3, h&0x08 != 0
	tl := int(binary.BigEndian.Uint16(b))
	off := 2 + tl
	var id uint16
	if qos > 0 {
		id = binary.BigEndian.Uint16(b[off:])
		off += 2
	}
	pl, n := binary.Uvarint(b[off:])
	payload := string(b[off+n+int(pl):])
	if qos == 0 {
		c.msgs = append(c.msgs, payload)
		return
	}
	if _, held := c.held[id]; held {
		if !dup {
			c.bad = append(c.bad, fmt.Sprintf("PUBLISH %q with id %d, which the client holds, without DUP", payload, id))
		}
		if qos == 2 {
			return // a duplicate: not delivered again
		}
	}
	c.held[id] = qos
	c.maxHeld = max(c.maxHeld, len(c.held))
	if len(c.held) > c.rm {
		c.bad = append(c.bad, fmt.Sprintf("%d unacknowledged PUBLISH packets held, Receive Maximum %d", len(c.held), c.rm))
	}
	c.msgs = append(c.msgs, payload)
	switch {
	case c.ackDelay < 0:
		c.pending = append(c.pending, id)
	case c.ackDelay == 0:
		c.first(id, qos)
	default:
		time.AfterFunc(c.ackDelay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.first(id, qos)
		})
	}
}

// first sends a message's first acknowledgement (PUBACK ends a QoS 1 flow;
// PUBREC keeps a QoS 2 one held until PUBREL); c.mu is held.
func (c *windowClient) first(id uint16, qos byte) {
	if qos == 1 {
		c.finish(id, ack(0x40, id))
		return
	}
	go c.write(ack(0x50, id))
}

// finish stops holding id and writes its final acknowledgement; the count
// drops before the broker can have read it. c.mu is held.
func (c *windowClient) finish(id uint16, final []byte) {
	delete(c.held, id)
	c.notify()
	c.wmu.Lock() // in order with other writes, without holding c.mu for long
	_, _ = c.conn.Write(final)
	c.wmu.Unlock()
}

// ackAll acknowledges the messages held back (ackDelay < 0), from now on
// at once.
func (c *windowClient) ackAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ackDelay = 0
	for _, id := range c.pending {
		c.first(id, c.held[id])
	}
	c.pending = nil
}

// ackOne acknowledges the oldest message held back.
func (c *windowClient) ackOne() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) > 0 {
		id := c.pending[0]
		c.pending = c.pending[1:]
		c.first(id, c.held[id])
	}
}

// waitUntil waits (up to a minute) until cond, called with c.mu held, is
// true.
func (c *windowClient) waitUntil(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.After(time.Minute)
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			stacks := make([]byte, 1<<20)
			stacks = stacks[:runtime.Stack(stacks, true)]
			c.mu.Lock()
			defer c.mu.Unlock()
			c.t.Fatalf("timed out waiting for %s: %d messages, %d held (%v), connection closed %v (reason 0x%x), violations %v; goroutines:\n%s",
				what, len(c.msgs), len(c.held), c.held, c.closed, c.reason, c.bad, stacks)
		}
	}
}

func (c *windowClient) subscribe(filter string, qos byte) {
	body := append([]byte{0, 1, 0}, mqttString(filter)...)
	c.write(packet(0x82, append(body, qos)))
}

func (c *windowClient) publish(topic string, qos byte, id uint16, payload string, retain bool) {
	h := byte(0x30 | qos<<1)
	if retain {
		h |= 1
	}
	body := mqttString(topic)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	body = append(append(body, 0), payload...)
	c.write(packet(h, body))
}

// check fails the test on any violation seen and returns the messages.
func (c *windowClient) check() []string {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) > 0 {
		c.t.Fatalf("flow control violated %d times, first: %v", len(c.bad), c.bad[:min(len(c.bad), 3)])
	}
	return append([]string(nil), c.msgs...)
}

// checkOncePerPublisher checks that msgs ("<publisher>/<seq>") hold every
// message of each publisher 0..publishers-1 once, seq 0..n-1 in order.
func checkOncePerPublisher(t testing.TB, msgs []string, publishers, n int) {
	t.Helper()
	next := make([]int, publishers)
	for _, m := range msgs {
		var p, seq int
		if _, err := fmt.Sscanf(m, "%d/%d", &p, &seq); err != nil || p >= publishers {
			t.Fatalf("unexpected message %q", m)
		}
		if seq != next[p] {
			t.Fatalf("publisher %d: got message %d, want %d (each once, in order)", p, seq, next[p])
		}
		next[p]++
	}
	for p, got := range next {
		if got != n {
			t.Fatalf("publisher %d: %d messages arrived, want %d", p, got, n)
		}
	}
}

// The case from the report: Receive Maximum 2, subscribed at QoS 2 to its
// own topic, three QoS 1 publishes and no acknowledgement. Only two are
// sent; the third leaves after the first PUBACK, with an id the client
// does not hold.
func TestReceiveMaximumSelfPublish(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	c, _ := dialWindow(t, r.addr(0), "self", 2, 0, true)
	c.ackDelay = -1
	c.subscribe("self/t", 2)
	c.waitUntil("SUBACK", func() bool { return c.subacks == 1 })
	for i := range 3 {
		c.publish("self/t", 1, uint16(i+1), fmt.Sprintf("0/%d", i), false)
	}
	c.waitUntil("PUBACKs of the three publishes", func() bool { return len(c.acks) == 3 })
	waitWriteLoopBlocked(t, r, "self")
	c.waitUntil("two messages", func() bool { return len(c.msgs) == 2 })
	if got := c.check(); len(got) != 2 {
		t.Fatalf("received %v while the window of 2 is full", got)
	}
	c.ackOne()
	c.waitUntil("the third message", func() bool { return len(c.msgs) == 3 })
	c.ackAll()
	c.waitUntil("nothing held", func() bool { return len(c.held) == 0 })
	checkOncePerPublisher(t, c.check(), 1, 3)
}

// waitWriteLoopBlocked waits until the write loop of client id waits for
// an acknowledgement: from then on the broker writes nothing more to it.
func waitWriteLoopBlocked(t testing.TB, r *running, id string) {
	t.Helper()
	waitFor(t, id+"'s write loop waiting for the window", func() bool {
		cl, ok := r.srv.Load().Clients.Get(id)
		if !ok {
			return false
		}
		f := r.flow(cl)
		return f != nil && f.waiting.Load()
	})
}

// TestReceiveMaximumHeld: subscribers with Receive Maximum 1 and 2 that
// acknowledge late never hold more unacknowledged QoS 1/2 messages than
// that, and get every message once, in order per publisher — from four
// other publishers, from themselves, as retained messages on SUBSCRIBE, and
// as a resumed persistent session's queue.
func TestReceiveMaximumHeld(t *testing.T) {
	for _, rm := range []uint16{1, 2} {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("rm%d-qos%d", rm, qos), func(t *testing.T) {
				t.Run("four-publishers", func(t *testing.T) { testFourPublishers(t, rm, qos) })
				t.Run("self", func(t *testing.T) { testSelf(t, rm, qos) })
				t.Run("retained", func(t *testing.T) { testRetained(t, rm, qos) })
				t.Run("resume", func(t *testing.T) { testResume(t, rm, qos) })
			})
		}
	}
}

func testFourPublishers(t *testing.T, rm uint16, qos byte) {
	const publishers, n = 4, 200
	r := start(t, anonCfg(), t.TempDir(), nil)
	sub, _ := dialWindow(t, r.addr(0), "sub", rm, 0, true)
	sub.ackDelay = time.Millisecond
	sub.subscribe("load/#", qos)
	sub.waitUntil("SUBACK", func() bool { return sub.subacks == 1 })
	publishConcurrently(t, r.addr(0), publishers, n, 10, qos, func(p, i int) []byte { return fmt.Appendf(nil, "%d/%d", p, i) })
	sub.waitUntil("every message", func() bool { return len(sub.msgs) == publishers*n && len(sub.held) == 0 })
	checkOncePerPublisher(t, sub.check(), publishers, n)
	t.Logf("most held at once: %d (Receive Maximum %d)", sub.maxHeld, rm)
}

func testSelf(t *testing.T, rm uint16, qos byte) {
	const n = 100
	r := start(t, anonCfg(), t.TempDir(), nil)
	c, _ := dialWindow(t, r.addr(0), "self", rm, 0, true)
	c.ackDelay = time.Millisecond
	c.subscribe("self/t", qos)
	c.waitUntil("SUBACK", func() bool { return c.subacks == 1 })
	for i := range n {
		c.publish("self/t", qos, uint16(i+1), fmt.Sprintf("0/%d", i), false)
	}
	c.waitUntil("every message", func() bool { return len(c.msgs) == n && len(c.held) == 0 })
	checkOncePerPublisher(t, c.check(), 1, n)
}

func testRetained(t *testing.T, rm uint16, qos byte) {
	const n = 10
	r := start(t, anonCfg(), t.TempDir(), nil)
	for i := range n {
		m := Message{Topic: fmt.Sprintf("ret/%d", i), QoS: qos, Retain: true, Payload: fmt.Appendf(nil, "%d/0", i)}
		if err := r.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := dialWindow(t, r.addr(0), "ret", rm, 0, true)
	c.ackDelay = -1
	c.subscribe("ret/#", qos)
	waitWriteLoopBlocked(t, r, "ret")
	// The broker has written all it will; wait for the client to read it.
	c.waitUntil("the window's worth", func() bool { return len(c.msgs) >= int(rm) })
	if got := c.check(); len(got) != int(rm) {
		t.Fatalf("received %d retained messages with the window of %d full, want %d", len(got), rm, rm)
	}
	c.ackAll()
	c.waitUntil("every retained message", func() bool { return len(c.msgs) == n && len(c.held) == 0 })
	checkOncePerPublisher(t, c.check(), n, 1)
}

func testResume(t *testing.T, rm uint16, qos byte) {
	const publishers, n = 2, 60
	r := start(t, anonCfg(), t.TempDir(), nil)
	sub, _ := dialWindow(t, r.addr(0), "resume", rm, 3600, true)
	sub.ackDelay = -1
	sub.subscribe("load/#", qos)
	sub.waitUntil("SUBACK", func() bool { return sub.subacks == 1 })
	publishConcurrently(t, r.addr(0), publishers, n/2, 10, qos, func(p, i int) []byte { return fmt.Appendf(nil, "%d/%d", p, i) })
	waitWriteLoopBlocked(t, r, "resume")
	sub.waitUntil("the window's worth", func() bool { return len(sub.msgs) >= int(rm) })
	first := sub.check() // held, unacknowledged: resent after the resume
	if len(first) != int(rm) {
		t.Fatalf("received %d with the window of %d full, want %d", len(first), rm, rm)
	}
	_ = sub.conn.Close()
	waitFor(t, "the session offline", func() bool {
		cl, ok := r.srv.Load().Clients.Get("resume")
		return ok && cl.Closed()
	})
	publishConcurrently(t, r.addr(0), publishers, n/2, 10, qos, func(p, i int) []byte { return fmt.Appendf(nil, "%d/%d", p, n/2+i) })

	again, present := dialWindow(t, r.addr(0), "resume", rm, 3600, false)
	if !present {
		t.Fatal("session not present on resume")
	}
	again.ackDelay = time.Millisecond
	// The first connection's unacknowledged messages are resent first
	// (with DUP), then the rest in order.
	again.waitUntil("the session's messages", func() bool { return len(again.msgs) == publishers*n && len(again.held) == 0 })
	checkOncePerPublisher(t, again.check(), publishers, n)
}

// TestStuckSubscriberSlowsOnlyItself is the attack of the security report
// (16.5), scaled down: subscribers with Receive Maximum 1 on "#" that never
// acknowledge, or acknowledge one message per delivery_wait and a bit,
// alongside two healthy subscribers, two network publishers (QoS 1 and 2)
// and an in-process publisher (as the device pollers and the bridge
// publish). The healthy subscribers get everything, once and in order;
// publishers wait for each stuck subscriber once (delivery_wait), then it
// drops what does not fit. The healthy subscribers' latency is logged.
func TestStuckSubscriberSlowsOnlyItself(t *testing.T) {
	for _, policy := range []string{QueueFullDrop, QueueFullDisconnect} {
		t.Run(policy, func(t *testing.T) { testStuckSubscriber(t, policy) })
	}
}

func testStuckSubscriber(t *testing.T, policy string) {
	const n = 300 // per publisher
	cfg := anonCfg()
	cfg.Limits.MaxInflight, cfg.Limits.MaxQueuedMessages = 16, 64
	cfg.Limits.WhenQueueFull = policy
	// Generous for the healthy subscribers, which must take 4 messages
	// (max_queued_messages/16) within it whenever their queue is full, also
	// under -race on a busy machine.
	wait := 2 * time.Second
	cfg.Limits.DeliveryWait = &wait
	r := start(t, cfg, t.TempDir(), nil)
	addr := r.addr(0)

	stuck, _ := dialWindow(t, addr, "stuck", 1, 0, true)
	stuck.ackDelay = -1
	stuck.subscribe("#", 2)
	slow, _ := dialWindow(t, addr, "slow", 1, 0, true)
	slow.ackDelay = -1
	slow.subscribe("#", 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // one acknowledgement per delivery_wait and a bit
		tick := time.NewTicker(wait + wait/10)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				slow.ackOne()
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var (
		mu      sync.Mutex
		sentAt  = map[string]time.Time{}
		latency []time.Duration
	)
	healthy := make([]*windowClient, 2)
	for i := range healthy {
		healthy[i], _ = dialWindow(t, addr, fmt.Sprintf("healthy%d", i), 10, 0, true)
		healthy[i].subscribe("#", 2)
	}
	waitFor(t, "the subscriptions", func() bool { return len(r.srv.Load().Topics.Subscribers("x").Subscriptions) == 4 })

	var pubs sync.WaitGroup
	for p, qos := range []byte{1, 2} {
		c := dialRawClient(t, addr, fmt.Sprintf("pub%d", p), 65535)
		pubs.Go(func() {
			err := c.publishAll(t, fmt.Sprintf("net/%d", p), qos, n, 10, func(i int) []byte {
				m := fmt.Sprintf("%d/%d", p, i)
				mu.Lock()
				sentAt[m] = time.Now()
				mu.Unlock()
				return []byte(m)
			})
			if err != nil {
				t.Errorf("publisher %d: %v", p, err)
			}
		})
	}
	pubs.Go(func() { // in-process, as device pollers publish
		for i := range n {
			m := fmt.Sprintf("2/%d", i)
			mu.Lock()
			sentAt[m] = time.Now()
			mu.Unlock()
			if err := r.Publish(context.Background(), Message{Topic: "dev/reading", QoS: 1, Payload: []byte(m), Origin: "devices"}); err != nil {
				t.Errorf("in-process publish %d: %v", i, err)
				return
			}
		}
	})
	// Latency as the first healthy subscriber sees it.
	h := healthy[0]
	seen := 0
	for seen < 3*n {
		h.waitUntil("the next message", func() bool { return len(h.msgs) > seen })
		h.mu.Lock()
		now := time.Now()
		for _, m := range h.msgs[seen:] {
			mu.Lock()
			latency = append(latency, now.Sub(sentAt[m]))
			mu.Unlock()
		}
		seen = len(h.msgs)
		h.mu.Unlock()
	}
	pubs.Wait()
	for _, c := range healthy {
		c.waitUntil("every message", func() bool { return len(c.msgs) == 3*n && len(c.held) == 0 })
		checkOncePerPublisher(t, c.check(), 3, n)
	}
	st := r.Stats()
	switch policy {
	case QueueFullDrop:
		if st.MessagesDropped == 0 {
			t.Errorf("the stuck subscribers dropped nothing; stats %+v", st)
		}
	case QueueFullDisconnect:
		stuck.waitUntil("the stuck subscriber disconnected", func() bool { return stuck.closed })
		slow.waitUntil("the slow subscriber disconnected", func() bool { return slow.closed })
		if stuck.reason != 0x97 || st.SlowDisconnects != 2 {
			t.Errorf("DISCONNECT reason 0x%x, %d disconnected; want 0x97, 2; stats %+v", stuck.reason, st.SlowDisconnects, st)
		}
	}
	if st.DeliveryWaitTimeout != 2 {
		t.Errorf("DeliveryWaitTimeout = %d, want 2 (each stuck subscriber given up once); stats %+v", st.DeliveryWaitTimeout, st)
	}
	for _, c := range []*windowClient{stuck, slow} {
		c.check() // the window held for them too
	}
	slices.Sort(latency)
	t.Logf("healthy subscriber latency over %d messages: p50 %v, p99 %v, max %v (delivery_wait %v)",
		len(latency), latency[len(latency)/2], latency[len(latency)*99/100], latency[len(latency)-1], wait)
}
