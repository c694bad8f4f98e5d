package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/google/go-cmp/cmp"
)

// The publisher's PUBACK/PUBCOMP arrives only after Ingress has returned.
func TestIngressRunsBeforeAck(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		entered := make(chan *Message)
		release := make(chan error)
		ingress := func(m *Message) error {
			entered <- m
			return <-release
		}
		r := start(t, anonCfg(), t.TempDir(), ingress)
		c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "pub", CleanStart: true, Username: "", UsernameFlag: false}, nil)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := c.Publish(context.Background(), &paho.Publish{Topic: "a/b", QoS: qos, Payload: []byte("x"),
				Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}})
			done <- err
		}()
		m := <-entered
		select {
		case err := <-done:
			t.Fatalf("qos %d: publish acknowledged (err %v) while Ingress was still running", qos, err)
		default:
		}
		if m.Topic != "a/b" || m.Origin != "pub" || m.QoS != qos || m.ContentType != "text/plain" ||
			len(m.UserProperties) != 1 || m.UserProperties[0] != (UserProperty{"k", "v"}) {
			t.Fatalf("Ingress got %+v", m)
		}
		release <- nil
		if err := <-done; err != nil {
			t.Fatalf("qos %d publish: %v", qos, err)
		}
	}
}

// MQTT 5 publishers get reason 0x97 on ErrQuotaExceeded, 0x80 on other
// errors, and the message is not delivered.
func TestIngressRefusalV5NegativeAck(t *testing.T) {
	ingress := func(m *Message) error {
		switch m.Topic {
		case "full":
			return ErrQuotaExceeded
		case "broken":
			return errTest
		}
		return nil
	}
	r := start(t, anonCfg(), t.TempDir(), ingress)
	got := make(chan Message, 10)
	unsub, err := r.Subscribe("#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "pub5", CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic string
		qos   byte
		code  byte
	}{{"full", 1, 0x97}, {"full", 2, 0x97}, {"broken", 1, 0x80}, {"broken", 2, 0x80}} {
		pr, _ := c.Publish(context.Background(), &paho.Publish{Topic: tc.topic, QoS: tc.qos, Payload: []byte("x")})
		if pr == nil || pr.ReasonCode != tc.code {
			t.Fatalf("%s qos %d: response %+v, want reason 0x%x", tc.topic, tc.qos, pr, tc.code)
		}
	}
	// The connection survives and later publishes are delivered; the refused ones never were.
	if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "ok", QoS: 1, Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m.Topic != "ok" {
		t.Fatalf("first delivered message %+v, want topic ok", m)
	}
	if st := r.Stats(); st.IngressRejected != 4 {
		t.Fatalf("IngressRejected = %d, want 4", st.IngressRejected)
	}
}

func TestInProcessPublishSubscribe(t *testing.T) {
	var ingressed []Message
	ingress := func(m *Message) error {
		ingressed = append(ingressed, *m) // in-process publishes below are sequential
		if m.Topic == "full" {
			return ErrQuotaExceeded
		}
		return nil
	}
	b, err := New(anonCfg(), Options{DataDir: t.TempDir(), Logger: testLogger(t), Ingress: syncIngress(ingress)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), Message{Topic: "x"}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Publish before Run: %v, want ErrNotRunning", err)
	}
	early := make(chan Message, 10)
	unsubEarly, err := b.Subscribe("dev/+/temp", func(m Message) { early <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsubEarly()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-b.Ready()

	msg := Message{Topic: "dev/boiler/temp", Payload: []byte("21.5"), QoS: 1, Retain: true, Origin: "devices",
		ContentType: "text/plain", UserProperties: []UserProperty{{"unit", "C"}}}
	if err := b.Publish(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	m := <-early
	if m.Origin != InProcessPrefix+"devices" || string(m.Payload) != "21.5" || m.ContentType != "text/plain" ||
		len(m.UserProperties) != 1 || m.UserProperties[0].Value != "C" {
		t.Fatalf("subscriber got %+v", m)
	}
	if len(ingressed) != 1 || ingressed[0].Origin != InProcessPrefix+"devices" {
		t.Fatalf("Ingress saw %+v", ingressed)
	}
	// A late subscriber gets the retained message on subscribe.
	late := make(chan Message, 10)
	unsubLate, err := b.Subscribe("dev/#", func(m Message) { late <- m })
	if err != nil {
		t.Fatal(err)
	}
	if m := <-late; m.Topic != "dev/boiler/temp" || !m.Retain {
		t.Fatalf("retained on subscribe: %+v", m)
	}
	unsubLate()
	// Ingress refusal is returned and nothing is delivered.
	if err := b.Publish(context.Background(), Message{Topic: "full", QoS: 1}); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Publish refused by Ingress: %v, want ErrQuotaExceeded", err)
	}
	if err := b.Publish(context.Background(), Message{Topic: "dev/x/temp", Origin: "bridge"}); err != nil {
		t.Fatal(err)
	}
	if m := <-early; m.Topic != "dev/x/temp" || m.Origin != InProcessPrefix+"bridge" {
		t.Fatalf("got %+v", m)
	}
	select {
	case m := <-late:
		t.Fatalf("unsubscribed handler got %+v", m)
	default:
	}
	for _, bad := range []string{"", "a/+", "a/#"} {
		if err := b.Publish(context.Background(), Message{Topic: bad}); err == nil {
			t.Fatalf("Publish to %q accepted", bad)
		}
	}
	if _, err := b.Subscribe("a/#/b", func(Message) {}); err == nil {
		t.Fatal("Subscribe to invalid filter accepted")
	}
}

// syncIngress adapts a blocking test hook to IngressFunc.
func syncIngress(f func(*Message) error) IngressFunc {
	if f == nil {
		return nil
	}
	return func(m *Message) (Stored, error) { return nil, f(m) }
}

// heldIngress is an asynchronous Ingress whose messages become durable only
// when the test releases them: release(i) makes the i-th message (from 0)
// durable, or refused with refuse[topic].
type heldIngress struct {
	mu      sync.Mutex
	seen    []Message
	gates   []chan struct{}
	entered chan struct{}
	refuse  map[string]error
}

func newHeldIngress(refuse map[string]error) *heldIngress {
	return &heldIngress{entered: make(chan struct{}, 1000), refuse: refuse}
}

func (h *heldIngress) ingress(m *Message) (Stored, error) {
	gate := make(chan struct{})
	h.mu.Lock()
	h.seen = append(h.seen, *m)
	h.gates = append(h.gates, gate)
	h.mu.Unlock()
	h.entered <- struct{}{}
	return heldStored{gate, h.refuse[m.Topic]}, nil
}

type heldStored struct {
	gate chan struct{}
	err  error
}

func (s heldStored) Done() <-chan struct{} { return s.gate }
func (s heldStored) Err() error            { return s.err }

func (h *heldIngress) release(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.gates[i])
}

func (h *heldIngress) waitEntered(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for range n {
		select {
		case <-h.entered:
		case <-timeout:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("Ingress saw %d of %d publishes: the client's reader waits for the disk", len(h.seen), n)
		}
	}
}

// startHeld runs a broker with a heldIngress and an in-process subscriber
// to t/#.
func startHeld(t *testing.T, refuse map[string]error) (*heldIngress, *Broker, func() error, <-chan Message) {
	t.Helper()
	held := newHeldIngress(refuse)
	b, stop := startAsync(t, anonCfg(), held.ingress)
	got := make(chan Message, 100)
	unsub, err := b.Subscribe("t/#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)
	return held, b, stop, got
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(t *testing.T, c net.Conn) (byte, []byte) {
	t.Helper()
	h := readN(t, c, 1)[0]
	n, mul := 0, 1
	for {
		b := readN(t, c, 1)[0]
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	return h, readN(t, c, n)
}

func rawPublish5(topic string, qos byte, id uint16, payload string) []byte {
	body := mqttString(topic)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	body = append(body, 0) // no properties
	return packet(0x30|qos<<1, append(body, payload...))
}

// A client's publishes are all handed to Ingress before the first one is
// durable (its reader does not wait for the disk); acknowledgements and
// local deliveries still follow the client's order whatever order the
// messages become durable in, a refused message is answered in its turn
// and not delivered, and QoS 0 and QoS 2 messages keep their place.
func TestIngressAsyncKeepsOrder(t *testing.T) {
	held, b, _, got := startHeld(t, map[string]error{"t/refused": ErrQuotaExceeded})
	c := dialRaw(t, b.Addrs()[0].String())
	if _, err := c.Write(rawConnect("MQTT", 5, "dev5")); err != nil {
		t.Fatal(err)
	}
	if h, _ := readPacket(t, c); h != 0x20 {
		t.Fatalf("want CONNACK, got packet %#x", h)
	}
	// 1..10: QoS 1 except 5 (QoS 0, no id) and 7 (QoS 2); 3 is refused.
	var burst []byte
	for i := 1; i <= 10; i++ {
		topic, qos := fmt.Sprintf("t/%d", i), byte(1)
		switch i {
		case 3:
			topic = "t/refused"
		case 5:
			qos = 0
		case 7:
			qos = 2
		}
		burst = append(burst, rawPublish5(topic, qos, uint16(i), fmt.Sprintf("m%d", i))...)
	}
	if _, err := c.Write(burst); err != nil {
		t.Fatal(err)
	}
	held.waitEntered(t, 10)
	held.mu.Lock()
	for i, m := range held.seen {
		if want := fmt.Sprintf("m%d", i+1); string(m.Payload) != want || m.Origin != "dev5" {
			t.Errorf("Ingress call %d: %s from %s, want %s from dev5", i, m.Payload, m.Origin, want)
		}
	}
	held.mu.Unlock()

	// Durable last to first: nothing may be answered before the first is.
	for i := 9; i >= 1; i-- {
		held.release(i)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("an acknowledgement arrived before the first publish was durable")
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	held.release(0)

	type ack struct {
		typ    byte
		id     uint16
		reason byte
	}
	var acks []ack
	for len(acks) < 9 {
		h, body := readPacket(t, c)
		a := ack{typ: h >> 4, id: uint16(body[0])<<8 | uint16(body[1])}
		if len(body) > 2 {
			a.reason = body[2]
		}
		acks = append(acks, a)
	}
	want := []ack{{4, 1, 0}, {4, 2, 0}, {4, 3, 0x97}, {4, 4, 0}, {4, 6, 0}, {5, 7, 0}, {4, 8, 0}, {4, 9, 0}, {4, 10, 0}}
	if diff := cmp.Diff(want, acks, cmp.AllowUnexported(ack{})); diff != "" {
		t.Fatalf("acknowledgements (-want +got):\n%s", diff)
	}
	// Complete the QoS 2 flow of message 7.
	if _, err := c.Write(packet(0x62, []byte{0, 7})); err != nil {
		t.Fatal(err)
	}
	if h, body := readPacket(t, c); h>>4 != 7 || body[1] != 7 {
		t.Fatalf("want PUBCOMP 7, got %#x %x", h, body)
	}
	var delivered []string
	for len(delivered) < 9 {
		m := <-got
		delivered = append(delivered, string(m.Payload))
	}
	if diff := cmp.Diff([]string{"m1", "m2", "m4", "m5", "m6", "m7", "m8", "m9", "m10"}, delivered); diff != "" {
		t.Errorf("local deliveries (-want +got):\n%s", diff)
	}
	if st := b.Stats(); st.IngressRejected != 1 || st.MessagesReceived < 10 || st.MessagesReceived > 11 {
		t.Errorf("stats: %d rejected (want 1), %d received (want 10, 11 with the in-process subscription's count)", st.IngressRejected, st.MessagesReceived)
	}
}

// A message that becomes durable after its publisher went away is still
// delivered locally (it is forwarded upstream too); shutdown waits for
// messages being stored.
func TestIngressAsyncPublisherGone(t *testing.T) {
	held, b, stop, got := startHeld(t, nil)
	c := dialRaw(t, b.Addrs()[0].String())
	if _, err := c.Write(rawConnect("MQTT", 4, "gone")); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 4)
	if _, err := c.Write(append(rawPublishQoS1("t/a", 1, "late"), rawPublishQoS1("t/b", 2, "last")...)); err != nil {
		t.Fatal(err)
	}
	held.waitEntered(t, 2)
	_ = c.Close()
	held.release(0)
	if m := <-got; string(m.Payload) != "late" || m.Origin != "gone" {
		t.Fatalf("delivered %q from %q, want late from gone", m.Payload, m.Origin)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }() // Run must wait for the second message
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while a publish was being stored", err)
	case <-time.After(100 * time.Millisecond):
	}
	held.release(1)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if m := <-got; string(m.Payload) != "last" {
		t.Fatalf("delivered %q, want last", m.Payload)
	}
}

// groupCommit is an asynchronous Ingress that makes queued messages durable
// in batches, from another goroutine, as the buffer's group commit does.
type groupCommit struct {
	mu      sync.Mutex
	pending []chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newGroupCommit() *groupCommit {
	g := &groupCommit{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for {
			select {
			case <-g.stop:
				g.commit()
				return
			case <-time.After(200 * time.Microsecond):
				g.commit()
			}
		}
	}()
	return g
}

func (g *groupCommit) commit() {
	g.mu.Lock()
	batch := g.pending
	g.pending = nil
	g.mu.Unlock()
	for _, c := range batch {
		close(c)
	}
}

func (g *groupCommit) close() { close(g.stop); <-g.done }

func (g *groupCommit) ingress(m *Message) (Stored, error) {
	c := make(chan struct{})
	g.mu.Lock()
	g.pending = append(g.pending, c)
	g.mu.Unlock()
	return heldStored{gate: c}, nil
}

// startAsync runs a broker with ingress until the test ends; stop ends it
// earlier and returns what Run returned.
func startAsync(t *testing.T, cfg Config, ingress IngressFunc) (b *Broker, stop func() error) {
	t.Helper()
	b, err := New(cfg, Options{DataDir: t.TempDir(), Logger: testLogger(t), Ingress: ingress})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-b.Ready()
	return b, stop
}

// Under load, with acknowledgements given by the ingress lines: every
// message is delivered, QoS 2 exactly once, and each publisher's messages
// reach the subscriber in the order they were sent.
func TestDeliveryAsyncIngress(t *testing.T) {
	const publishers, perPublisher, window = 4, 3000, 100
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos%d", qos), func(t *testing.T) {
			gc := newGroupCommit()
			defer gc.close()
			b, _ := startAsync(t, loadCfg(), gc.ingress)
			addr := b.Addrs()[0].String()
			var (
				mu    sync.Mutex
				next  = make([]uint32, publishers)
				count int
				bad   []string
				all   = make(chan struct{})
			)
			sub := dialRawClient(t, addr, "sub", window)
			sub.subscribe(t, "load/#", qos, func(p []byte) {
				mu.Lock()
				defer mu.Unlock()
				pub, seq := binary.BigEndian.Uint32(p), binary.BigEndian.Uint32(p[4:])
				if seq != next[pub] && len(bad) < 5 {
					bad = append(bad, fmt.Sprintf("publisher %d: got %d, want %d", pub, seq, next[pub]))
				}
				next[pub] = seq + 1
				count++
				if count == publishers*perPublisher {
					close(all)
				}
			})
			publishConcurrently(t, addr, publishers, perPublisher, window, qos, func(p, i int) []byte {
				return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(p)), uint32(i))
			})
			select {
			case <-all:
			case <-time.After(time.Minute):
			}
			mu.Lock()
			defer mu.Unlock()
			if count != publishers*perPublisher || len(bad) > 0 {
				t.Fatalf("delivered %d of %d; out of order or duplicated: %v; stats %+v", count, publishers*perPublisher, bad, b.Stats())
			}
		})
	}
}
