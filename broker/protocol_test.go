package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Raw MQTT packets, so the tests see exactly the bytes a cheap device sees.

func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func packet(header byte, body []byte) []byte {
	out := []byte{header}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func rawConnect(name string, level byte, clientID string) []byte {
	body := append(mqttString(name), level, 0x02, 0, 60) // clean session, keepalive 60
	if level == 5 {
		body = append(body, 0) // no properties
	}
	return packet(0x10, append(body, mqttString(clientID)...))
}

func rawPublishQoS1(topic string, id uint16, payload string) []byte {
	body := append(mqttString(topic), byte(id>>8), byte(id))
	return packet(0x32, append(body, payload...))
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return buf
}

// readRest reads until the server closes the connection.
func readRest(t *testing.T, c net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(c)
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && !ne.Timeout()) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("reading until close: %v (got %x)", err, b)
	}
	return b
}

func TestConnackBadProtocolIs311Code(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	for _, tc := range []struct {
		name  string
		proto string
		level byte
	}{
		{"bad level", "MQTT", 6},
		{"level 3 with MQTT name", "MQTT", 3},
		{"bad name", "MQTX", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, r.addr(0))
			if _, err := c.Write(rawConnect(tc.proto, tc.level, "dev")); err != nil {
				t.Fatal(err)
			}
			got := readRest(t, c)
			if want := []byte{0x20, 0x02, 0x00, 0x01}; !bytes.Equal(got, want) {
				t.Fatalf("server sent %x, want CONNACK return code 0x01 (%x) then close", got, want)
			}
		})
	}
}

func TestTakeoverSendsNoDisconnectTo311(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	first := dialRaw(t, r.addr(0))
	if _, err := first.Write(rawConnect("MQTT", 4, "dup")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, first, 4); !bytes.Equal(got, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("first CONNACK %x", got)
	}
	second := dialRaw(t, r.addr(0))
	if _, err := second.Write(rawConnect("MQTT", 4, "dup")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, second, 4); !bytes.Equal(got, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("second CONNACK %x", got)
	}
	if rest := readRest(t, first); len(rest) != 0 {
		t.Fatalf("taken-over 3.1.1 client received %x, want the connection closed with no packet", rest)
	}

	// MQTT 5 clients do get DISCONNECT 0x8E (session taken over).
	v5a := dialRaw(t, r.addr(0))
	if _, err := v5a.Write(rawConnect("MQTT", 5, "dup5")); err != nil {
		t.Fatal(err)
	}
	hdr := readN(t, v5a, 2)
	readN(t, v5a, int(hdr[1]))
	v5b := dialRaw(t, r.addr(0))
	if _, err := v5b.Write(rawConnect("MQTT", 5, "dup5")); err != nil {
		t.Fatal(err)
	}
	rest := readRest(t, v5a)
	if len(rest) < 3 || rest[0] != 0xE0 || rest[2] != 0x8E {
		t.Fatalf("taken-over MQTT 5 client received %x, want DISCONNECT 0x8E", rest)
	}
}

func TestReservedClientIDRefused(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	for _, id := range []string{InProcessPrefix + "devices", "inline"} {
		c := dialRaw(t, r.addr(0))
		if _, err := c.Write(rawConnect("MQTT", 4, id)); err != nil {
			t.Fatal(err)
		}
		got := readRest(t, c)
		if want := []byte{0x20, 2, 0, 0x02}; !bytes.Equal(got, want) {
			t.Fatalf("client id %q: got %x, want CONNACK 0x02 (identifier rejected)", id, got)
		}
	}
}

// An MQTT 3.1.1 QoS 1 publish that Ingress refuses is not acknowledged: the
// connection is closed so the device re-sends it after reconnecting.
func TestIngressRefusal311ClosesWithoutAck(t *testing.T) {
	ingress := func(m *Message) error {
		if m.Topic == "full" {
			return ErrQuotaExceeded
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

	c := dialRaw(t, r.addr(0))
	if _, err := c.Write(rawConnect("MQTT", 4, "dev311")); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 4)
	if _, err := c.Write(rawPublishQoS1("ok", 1, "a")); err != nil {
		t.Fatal(err)
	}
	if ack := readN(t, c, 4); !bytes.Equal(ack, []byte{0x40, 2, 0, 1}) {
		t.Fatalf("PUBACK for accepted publish: %x", ack)
	}
	if _, err := c.Write(rawPublishQoS1("full", 2, "b")); err != nil {
		t.Fatal(err)
	}
	if rest := readRest(t, c); len(rest) != 0 {
		t.Fatalf("refused 3.1.1 publish: server sent %x, want close without PUBACK", rest)
	}
	if m := <-got; m.Topic != "ok" || m.Origin != "dev311" {
		t.Fatalf("delivered %+v, want the accepted message from dev311", m)
	}
	// Nothing else was delivered: publish a marker in-process and expect it next.
	if err := r.Publish(context.Background(), Message{Topic: "marker", Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m.Topic != "marker" {
		t.Fatalf("refused message was delivered: %+v", m)
	}
	if st := r.Stats(); st.IngressRejected != 1 {
		t.Fatalf("IngressRejected = %d, want 1", st.IngressRejected)
	}
}
