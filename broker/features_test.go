package broker

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

func TestWillMessages(t *testing.T) {
	ch := make(chan string, 10)
	ingress := func(m *Message) error {
		ch <- "ingress " + m.Topic
		return nil
	}
	r := start(t, anonCfg(), t.TempDir(), ingress)
	got := make(chan Message, 10)
	unsub, err := r.Subscribe("will/#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()

	delay := uint32(1)
	for _, tc := range []struct {
		topic string
		props *paho.WillProperties
	}{{"will/now", nil}, {"will/delayed", &paho.WillProperties{WillDelayInterval: &delay}}} {
		c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "w-" + tc.topic[5:], CleanStart: true,
			WillMessage:    &paho.WillMessage{Topic: tc.topic, Payload: []byte("gone"), QoS: 1},
			WillProperties: tc.props,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: &delay}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.TerminateConnectionForTest() // abnormal disconnect
		if m := <-got; m.Topic != tc.topic || string(m.Payload) != "gone" {
			t.Fatalf("will: got %+v", m)
		}
		if s := <-ch; s != "ingress "+tc.topic {
			t.Fatalf("Ingress saw %q", s)
		}
	}
	// A clean DISCONNECT sends no will.
	c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "w-clean", CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: "will/clean", Payload: []byte("x"), QoS: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	<-c.Done()
	if err := r.Publish(context.Background(), Message{Topic: "will/marker"}); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m.Topic != "will/marker" {
		t.Fatalf("will sent after clean disconnect: %+v", m)
	}
}

func TestMQTT5Features(t *testing.T) {
	cfg := anonCfg()
	cfg.Auth.ACL = []ACLRule{{Username: "*", Publish: []string{"#"}, Subscribe: []string{"f/#", "$share/+/f/#"}}}
	r := start(t, cfg, t.TempDir(), nil)

	t.Run("server keepalive", func(t *testing.T) {
		_, ca, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "ka", CleanStart: true, KeepAlive: 3600}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 300 {
			t.Fatalf("CONNACK server keepalive %+v, want 300 (limits.max_keepalive default)", ca.Properties)
		}
	})

	t.Run("refused subscription is 0x87", func(t *testing.T) {
		c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "suber", CleanStart: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sa, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "f/ok", QoS: 1}, {Topic: "secret/#", QoS: 1}}})
		if sa == nil || !bytes.Equal(sa.Reasons, []byte{1, 0x87}) {
			t.Fatalf("SUBACK %+v (err %v), want reasons [1 0x87]", sa, err)
		}
	})

	t.Run("overlapping subscriptions at maximum QoS, delivered once", func(t *testing.T) {
		got := make(chan *paho.Publish, 10)
		c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "overlap", CleanStart: true}, func(p *paho.Publish) { got <- p })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
			{Topic: "f/#", QoS: 0}, {Topic: "f/o/x", QoS: 2}}}); err != nil {
			t.Fatal(err)
		}
		if err := r.Publish(context.Background(), Message{Topic: "f/o/x", QoS: 2, Payload: []byte("1")}); err != nil {
			t.Fatal(err)
		}
		if err := r.Publish(context.Background(), Message{Topic: "f/o/end", QoS: 0, Payload: []byte("2")}); err != nil {
			t.Fatal(err)
		}
		if p := <-got; p.Topic != "f/o/x" || p.QoS != 2 {
			t.Fatalf("got %s at QoS %d, want f/o/x at QoS 2", p.Topic, p.QoS)
		}
		if p := <-got; p.Topic != "f/o/end" {
			t.Fatalf("overlapping subscription delivered twice (then %s)", p.Topic)
		}
	})

	t.Run("shared subscription delivers each message to one member", func(t *testing.T) {
		got := make(chan string, 100)
		for _, id := range []string{"m1", "m2"} {
			c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: id, CleanStart: true}, func(p *paho.Publish) { got <- id + ":" + string(p.Payload) })
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
				{Topic: "$share/g/f/shared", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
		}
		const n = 20
		for i := range n {
			if err := r.Publish(context.Background(), Message{Topic: "f/shared", QoS: 1, Payload: []byte{byte('a' + i)}}); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]bool{}
		for range n {
			s := <-got
			payload := s[strings.IndexByte(s, ':')+1:]
			if seen[payload] {
				t.Fatalf("message %s delivered to two members", payload)
			}
			seen[payload] = true
		}
	})

	t.Run("topic alias from client", func(t *testing.T) {
		got := make(chan Message, 10)
		unsub, err := r.Subscribe("f/alias", func(m Message) { got <- m })
		if err != nil {
			t.Fatal(err)
		}
		defer unsub()
		c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "aliaser", CleanStart: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		alias := uint16(1)
		if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "f/alias", QoS: 1, Payload: []byte("1"), Properties: &paho.PublishProperties{TopicAlias: &alias}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Publish(context.Background(), &paho.Publish{Topic: "", QoS: 1, Payload: []byte("2"), Properties: &paho.PublishProperties{TopicAlias: &alias}}); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"1", "2"} {
			if m := <-got; string(m.Payload) != want || m.Topic != "f/alias" {
				t.Fatalf("got %+v, want payload %s on f/alias", m, want)
			}
		}
	})

	t.Run("$SYS statistics", func(t *testing.T) {
		got := make(chan Message, 100)
		unsub, err := r.Subscribe("$SYS/broker/clients/connected", func(m Message) { got <- m })
		if err != nil {
			t.Fatal(err)
		}
		defer unsub()
		if m := <-got; len(m.Payload) == 0 {
			t.Fatalf("empty $SYS value %+v", m)
		}
	})
}

// SetAuth swaps users and ACL without dropping connections.
func TestSetAuthLive(t *testing.T) {
	cfg := anonCfg()
	cfg.Auth.ACL = []ACLRule{{Username: "*", Publish: []string{"a/#"}}}
	r := start(t, cfg, t.TempDir(), nil)
	got := make(chan Message, 10)
	unsub, err := r.Subscribe("#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "live", CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(topic string) byte {
		pr, _ := c.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)})
		if pr == nil {
			t.Fatalf("publish %s: no response", topic)
		}
		return pr.ReasonCode
	}
	if code := pub("b/1"); code != 0x87 {
		t.Fatalf("publish outside ACL: reason 0x%x, want 0x87", code)
	}
	if err := r.SetAuth(AuthConfig{Anonymous: true, ACL: []ACLRule{{Username: "*", Publish: []string{"b/#"}}}}); err != nil {
		t.Fatal(err)
	}
	if code := pub("b/2"); code != 0 {
		t.Fatalf("publish after SetAuth: reason 0x%x", code)
	}
	if m := <-got; m.Topic != "b/2" {
		t.Fatalf("got %+v", m)
	}
	if err := r.SetAuth(AuthConfig{Users: []UserConfig{{Username: "x", PasswordHash: "nope"}}}); err == nil {
		t.Fatal("SetAuth accepted an invalid bcrypt hash")
	}
	// New connections follow the new anonymous setting.
	if err := r.SetAuth(AuthConfig{Anonymous: false, ACL: []ACLRule{{Username: "*", Publish: []string{"c/#"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "late", CleanStart: true}, nil); err == nil {
		t.Fatal("anonymous connection accepted after SetAuth disabled it")
	}
	if code := pub("b/3"); code != 0x87 {
		t.Fatalf("existing connection after ACL change: reason 0x%x, want 0x87", code)
	}
}

func TestMessageExpiryOfRetained(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	c, _, err := dialPaho(t, r.addr(0), &paho.Connect{ClientID: "exp", CleanStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	one := uint32(1)
	for _, p := range []*paho.Publish{
		{Topic: "exp/short", QoS: 1, Retain: true, Payload: []byte("x"), Properties: &paho.PublishProperties{MessageExpiry: &one}},
		{Topic: "exp/forever", QoS: 1, Retain: true, Payload: []byte("y")},
	} {
		if _, err := c.Publish(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the expired retained message to be removed", func() bool { return r.Stats().Retained == 1 })
	got := make(chan Message, 10)
	unsub, err := r.Subscribe("exp/#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	if m := <-got; m.Topic != "exp/forever" || len(got) != 0 {
		t.Fatalf("retained after expiry: %+v (+%d more), want only exp/forever", m, len(got))
	}
}
