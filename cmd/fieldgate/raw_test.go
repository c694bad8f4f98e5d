package main

// A raw MQTT client for attack tests: it writes exactly the bytes a test
// builds (malformed ones included) and reads packets back undecoded.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// mqttStr and mqttPacket are in recvmax_e2e_test.go.

// connectOpts describes a CONNECT.
type connectOpts struct {
	v5         bool
	clientID   string
	clean      bool
	user, pass string
	willTopic  string // "" = no will
	willQoS    byte
	willRetain bool
	keepalive  uint16
	sessionExp uint32 // MQTT 5 session expiry interval
}

func connectPacket(o connectOpts) []byte {
	name, level := "MQTT", byte(4)
	if o.v5 {
		level = 5
	}
	var flags byte
	if o.clean {
		flags |= 0x02
	}
	if o.willTopic != "" {
		flags |= 0x04 | o.willQoS<<3
		if o.willRetain {
			flags |= 0x20
		}
	}
	if o.user != "" {
		flags |= 0x80
	}
	if o.pass != "" {
		flags |= 0x40
	}
	ka := o.keepalive
	if ka == 0 {
		ka = 60
	}
	body := append(mqttStr(name), level, flags, byte(ka>>8), byte(ka))
	if o.v5 {
		if o.sessionExp > 0 {
			e := o.sessionExp
			body = append(body, 5, 0x11, byte(e>>24), byte(e>>16), byte(e>>8), byte(e))
		} else {
			body = append(body, 0)
		}
	}
	body = append(body, mqttStr(o.clientID)...)
	if o.willTopic != "" {
		if o.v5 {
			body = append(body, 0) // no will properties
		}
		body = append(body, mqttStr(o.willTopic)...)
		body = append(body, mqttStr("will-payload")...)
	}
	if o.user != "" {
		body = append(body, mqttStr(o.user)...)
	}
	if o.pass != "" {
		body = append(body, mqttStr(o.pass)...)
	}
	return mqttPacket(0x10, body)
}

// subscribePacket subscribes to filter at qos (packet id 1).
func subscribePacket(v5 bool, filter string, qos byte) []byte {
	body := []byte{0, 1}
	if v5 {
		body = append(body, 0)
	}
	body = append(body, mqttStr(filter)...)
	body = append(body, qos)
	return mqttPacket(0x82, body)
}

// publishPacket publishes payload on topic; id is used for qos > 0.
func publishPacket(v5 bool, topic string, qos byte, retain bool, id uint16, payload []byte) []byte {
	h := byte(0x30) | qos<<1
	if retain {
		h |= 1
	}
	body := mqttStr(topic)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	if v5 {
		body = append(body, 0)
	}
	return mqttPacket(h, append(body, payload...))
}

// rawConn is one raw MQTT connection.
type rawConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialMQTT(t testing.TB, port int) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(p []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(p); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet's fixed header byte and body; err is io.EOF
// (or a reset) when the server closed the connection.
func (rc *rawConn) read(timeout time.Duration) (byte, []byte, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(timeout))
	return readPacket(rc.r)
}

// readPacket reads one MQTT packet from r: its fixed header byte and body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return h, body, err
}

// connack sends o's CONNECT and returns the CONNACK's session present flag
// and reason code.
func (rc *rawConn) connack(o connectOpts) (present bool, code byte) {
	rc.t.Helper()
	rc.send(connectPacket(o))
	h, body, err := rc.read(10 * time.Second)
	if err != nil {
		rc.t.Fatalf("reading CONNACK: %v", err)
	}
	if h>>4 != 2 || len(body) < 2 {
		rc.t.Fatalf("want CONNACK, got header %#x body %x", h, body)
	}
	return body[0]&1 == 1, body[1]
}

// nextPublish returns the topic and payload of the next PUBLISH within
// timeout (other packets are skipped); ok is false on timeout or close.
func (rc *rawConn) nextPublish(v5 bool, timeout time.Duration) (topic string, payload []byte, ok bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		h, body, err := rc.read(time.Until(deadline))
		if err != nil {
			return "", nil, false
		}
		if h>>4 != 3 {
			continue
		}
		qos := (h >> 1) & 3
		tl := int(body[0])<<8 | int(body[1])
		topic = string(body[2 : 2+tl])
		rest := body[2+tl:]
		if qos > 0 {
			id := rest[:2]
			rest = rest[2:]
			if qos == 1 {
				rc.send([]byte{0x40, 2, id[0], id[1]})
			}
		}
		if v5 {
			plen := int(rest[0]) // property lengths < 128 in these tests
			rest = rest[1+plen:]
		}
		return topic, rest, true
	}
	return "", nil, false
}
