package broker

import (
	"context"
	"errors"
	"testing"

	"github.com/eclipse/paho.golang/paho"
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
	b, err := New(anonCfg(), Options{DataDir: t.TempDir(), Logger: testLogger(t), Ingress: ingress})
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
