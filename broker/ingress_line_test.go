package broker

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Messages answered by the ingress line (every publish goes through it with
// an asynchronous Ingress) are delivered as mochi delivers them: retained
// ones are retained by the time the publisher has its acknowledgement,
// no-local holds, topic aliases resolve, QoS 2 is delivered once, a topic
// that gains a subscriber after publishes went to no one delivers to it,
// and the broker's counters count each message once.
func TestIngressLineDelivery(t *testing.T) {
	gc := newGroupCommit()
	defer gc.close()
	var seen []Message
	b, _ := startAsync(t, anonCfg(), func(m *Message) (Stored, error) {
		seen = append(seen, *m) // one publisher below, so one reading goroutine
		return gc.ingress(m)
	})
	addr := b.Addrs()[0].String()
	ctx := context.Background()

	pubGot := make(chan *paho.Publish, 10)
	pub, _, err := dialPaho(t, addr, &paho.Connect{ClientID: "pub", CleanStart: true}, func(p *paho.Publish) { pubGot <- p })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "l/#", QoS: 1, NoLocal: true}}}); err != nil {
		t.Fatal(err)
	}

	// Publishes to a topic no one subscribes to yet.
	for _, p := range []string{"early1", "early2"} {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "n/x", QoS: 1, Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}
	// An in-process subscriber, then a network one, appear: later
	// publishes reach them.
	inproc := make(chan Message, 10)
	unsub, err := b.Subscribe("n/#", func(m Message) { inproc <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "n/x", QoS: 1, Payload: []byte("late")}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, inproc); string(m.Payload) != "late" || m.Origin != "pub" {
		t.Fatalf("in-process subscriber got %q from %q, want late from pub", m.Payload, m.Origin)
	}
	subGot := make(chan *paho.Publish, 10)
	sub, _, err := dialPaho(t, addr, &paho.Connect{ClientID: "sub", CleanStart: true}, func(p *paho.Publish) { subGot <- p })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "n/#", QoS: 1}, {Topic: "l/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "n/x", QoS: 0, Payload: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	if p := recv(t, subGot); string(p.Payload) != "later" {
		t.Fatalf("new subscriber got %q, want later", p.Payload)
	}

	// QoS 1 and 2 with a topic alias; a retained message.
	alias := uint16(1)
	for _, p := range []*paho.Publish{
		{Topic: "l/a", QoS: 1, Payload: []byte("1"), Properties: &paho.PublishProperties{TopicAlias: &alias}},
		{Topic: "", QoS: 2, Payload: []byte("2"), Properties: &paho.PublishProperties{TopicAlias: &alias}},
		{Topic: "l/r", QoS: 1, Retain: true, Payload: []byte("3")},
	} {
		if _, err := pub.Publish(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// The retained message is in place once acknowledged.
	late := make(chan *paho.Publish, 10)
	lc, _, err := dialPaho(t, addr, &paho.Connect{ClientID: "latecomer", CleanStart: true}, func(p *paho.Publish) { late <- p })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "l/r", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-late:
		if string(p.Payload) != "3" || !p.Retain {
			t.Fatalf("latecomer got %q (retain %v), want the retained 3", p.Payload, p.Retain)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("retained message not delivered to a later subscriber")
	}
	for _, want := range []struct {
		topic, payload string
		qos            byte
	}{{"l/a", "1", 1}, {"l/a", "2", 2}, {"l/r", "3", 1}} {
		p := recv(t, subGot)
		if p.Topic != want.topic || string(p.Payload) != want.payload || p.QoS != want.qos {
			t.Fatalf("subscriber got %s %q at QoS %d, want %s %q at QoS %d", p.Topic, p.Payload, p.QoS, want.topic, want.payload, want.qos)
		}
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "n/end", QoS: 1, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	if p := recv(t, subGot); string(p.Payload) != "end" {
		t.Fatalf("subscriber got %s %q, want end (a duplicate?)", p.Topic, p.Payload)
	}
	select {
	case p := <-pubGot:
		t.Fatalf("no-local subscriber got its own message %s %q", p.Topic, p.Payload)
	default:
	}

	var topics []string
	for _, m := range seen {
		topics = append(topics, m.Topic)
	}
	want := []string{"n/x", "n/x", "n/x", "n/x", "l/a", "l/a", "l/r", "n/end"}
	if len(topics) != len(want) {
		t.Fatalf("Ingress saw %v, want %v", topics, want)
	}
	for i := range want {
		if topics[i] != want[i] {
			t.Fatalf("Ingress saw %v, want %v", topics, want)
		}
	}
	waitFor(t, "every flow to complete (Stats.Inflight 0)", func() bool { return b.Stats().Inflight == 0 })
	st := b.Stats()
	// 8 publishes plus mochi's count of the in-process subscription's
	// retained-message scan (see TestIngressAsyncKeepsOrder).
	if st.MessagesReceived < 8 || st.MessagesReceived > 9 {
		t.Errorf("Stats.MessagesReceived = %d, want 8 (each publish counted once)", st.MessagesReceived)
	}
}

// recv waits at most 30 s for a value from ch.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("nothing delivered within 30s")
		panic("unreachable")
	}
}
