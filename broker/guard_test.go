package broker

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// rawConnectWill is a 3.1.1 clean-session CONNECT with a QoS 0 will.
func rawConnectWill(clientID, willTopic string) []byte {
	body := append(mqttString("MQTT"), 4, 0x02|0x04, 0, 60)
	body = append(body, mqttString(clientID)...)
	body = append(body, mqttString(willTopic)...)
	body = append(body, mqttString("gone")...)
	return packet(0x10, body)
}

// A will is checked again when it is published: after the ACL changed, a
// will its client may no longer publish is not delivered.
func TestWillRecheckedWhenPublished(t *testing.T) {
	cfg := anonCfg()
	cfg.Auth.ACL = []ACLRule{{Username: "*", Publish: []string{"w/#"}, Subscribe: []string{"#"}}}
	r := start(t, cfg, t.TempDir(), nil)
	var mu sync.Mutex
	var got []string
	unsub, err := r.Subscribe("w/#", func(m Message) {
		mu.Lock()
		got = append(got, m.Topic)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	seen := func(topic string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range got {
			if g == topic {
				return true
			}
		}
		return false
	}
	dial := func(id, topic string) {
		c := dialRaw(t, r.addr(0))
		if _, err := c.Write(rawConnectWill(id, topic)); err != nil {
			t.Fatal(err)
		}
		if ack := readN(t, c, 4); !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
			t.Fatalf("%s: CONNACK %x", id, ack)
		}
		_ = c.Close() // no DISCONNECT: the will is due
	}
	dial("allowed", "w/allowed")
	waitFor(t, "the allowed will", func() bool { return seen("w/allowed") })

	c := dialRaw(t, r.addr(0))
	if _, err := c.Write(rawConnectWill("revoked", "w/revoked")); err != nil {
		t.Fatal(err)
	}
	if ack := readN(t, c, 4); !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK %x", ack)
	}
	if err := r.SetAuth(AuthConfig{Anonymous: true, ACL: []ACLRule{{Username: "*", Publish: []string{"other/#"}, Subscribe: []string{"#"}}}}); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	dial("after", "other/after") // a will published after the revoked one would have been
	time.Sleep(100 * time.Millisecond)
	if seen("w/revoked") {
		t.Fatal("a will denied by the ACL in force was delivered")
	}
	if r.Stats().ACLDenied == 0 {
		t.Error("the denied will is not counted")
	}
}

// Messages queued for a persistent session are checked against the ACL in
// force when the session is resumed.
func TestQueuedMessagesACLCheckedOnResume(t *testing.T) {
	cfg := anonCfg()
	cfg.Auth.ACL = []ACLRule{{Username: "*", Publish: []string{"q/#"}, Subscribe: []string{"q/#"}}}
	r := start(t, cfg, t.TempDir(), nil)
	connect := func() []byte {
		body := append(mqttString("MQTT"), 4, 0x00, 0, 60) // clean session off
		return packet(0x10, append(body, mqttString("keeper")...))
	}
	c := dialRaw(t, r.addr(0))
	if _, err := c.Write(connect()); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 4)
	sub := packet(0x82, append([]byte{0, 1}, append(mqttString("q/#"), 1)...))
	if _, err := c.Write(sub); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 5) // SUBACK
	_ = c.Close()
	waitFor(t, "the session offline", func() bool { return r.Stats().ClientsConnected == 0 })
	for _, topic := range []string{"q/secret", "q/public"} {
		if err := r.Publish(t.Context(), Message{Topic: topic, Payload: []byte("x"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.SetAuth(AuthConfig{Anonymous: true, ACL: []ACLRule{{Username: "*", Subscribe: []string{"q/public"}}}}); err != nil {
		t.Fatal(err)
	}
	c = dialRaw(t, r.addr(0))
	if _, err := c.Write(connect()); err != nil {
		t.Fatal(err)
	}
	if ack := readN(t, c, 4); !bytes.Equal(ack, []byte{0x20, 2, 1, 0}) {
		t.Fatalf("CONNACK %x, want session present", ack)
	}
	hdr := readN(t, c, 2)
	body := readN(t, c, int(hdr[1]))
	if hdr[0]>>4 != 3 || !bytes.Contains(body, []byte("q/public")) {
		t.Fatalf("first packet %x %q, want the q/public message", hdr, body)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	more, _ := io.ReadAll(c) // until the deadline
	if bytes.Contains(more, []byte("q/secret")) {
		t.Fatalf("a queued message the ACL now denies was delivered: %q", more)
	}
}
