package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawV5 is a bare MQTT 5 client connection for the attack below.
type rawV5 struct {
	conn net.Conn
	r    *bufio.Reader
}

func mqttStr(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func mqttPacket(header byte, body []byte) []byte {
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
			return append(out, body...)
		}
	}
}

// dialV5 connects with Receive Maximum rm and subscribes to filter at QoS
// 1, waiting for CONNACK and SUBACK.
func dialV5(t *testing.T, g *gw, id string, rm uint16, filter string) *rawV5 {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.mqttPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawV5{conn: conn, r: bufio.NewReader(conn)}
	body := append(mqttStr("MQTT"), 5, 0x02, 0, 60, 3, 0x21, byte(rm>>8), byte(rm))
	sub := append([]byte{0, 1, 0}, mqttStr(filter)...)
	if _, err := conn.Write(append(mqttPacket(0x10, append(body, mqttStr(id)...)), mqttPacket(0x82, append(sub, 1))...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []byte{2, 9} {
		if h, _, err := c.read(); err != nil || h>>4 != want {
			t.Fatalf("%s: want packet type %d, got %x (%v)", id, want, h, err)
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return c
}

func (c *rawV5) read() (byte, []byte, error) { return readPacket(c.r) }

// publishIDs reads what the connection has received until it has been
// quiet for a while and returns the packet ids of the QoS 1/2 PUBLISH
// packets among it.
func (c *rawV5) publishIDs() []uint16 {
	var ids []uint16
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		h, b, err := c.read()
		if err != nil {
			return ids
		}
		if h>>4 == 3 && (h>>1)&3 > 0 {
			tl := int(b[0])<<8 | int(b[1])
			ids = append(ids, uint16(b[2+tl])<<8|uint16(b[3+tl]))
		}
	}
}

// TestReceiveMaximumAttackE2E reproduces the security report's 16.5 against
// the binary: a client with Receive Maximum 1 subscribed to "#" that never
// acknowledges, and one that acknowledges a message now and then (each
// time just after delivery_wait, the report's "one per 31 s" against 30 s),
// alongside a device poller and a healthy mosquitto_sub/mosquitto_pub pair.
// Before, every matching publish waited delivery_wait again and again; now
// publishers wait for each stuck client once, the device readings and the
// healthy subscriber keep flowing, the stuck clients never hold more than
// one unacknowledged message, and their losses are counted in /metrics.
func TestReceiveMaximumAttackE2E(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	const devices = `devices:
  - name: meter
    driver: sim
    poll: 50ms
    qos: 1
    topic: "plant/{device}/{point}"
    points: [{name: count, sim: counter, value: 0, step: 1}]
`
	g := startGW(t, t.TempDir(), anonHeader+"  limits: {max_inflight: 16, max_queued_messages: 32}\n"+devices)
	stuck := dialV5(t, g, "stuck", 1, "#")
	slow := dialV5(t, g, "slow", 1, "#")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var slowIDs []uint16
	wg.Go(func() { // slow: acknowledge one message every 1.1 × delivery_wait (1s)
		tick := time.NewTicker(1100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = slow.conn.SetReadDeadline(time.Now().Add(1100 * time.Millisecond))
			h, b, err := slow.read()
			if err == nil && h>>4 == 3 && (h>>1)&3 == 1 {
				tl := int(b[0])<<8 | int(b[1])
				slowIDs = append(slowIDs, uint16(b[2+tl])<<8|uint16(b[3+tl]))
			}
			select {
			case <-stop:
				return
			case <-tick.C:
				if len(slowIDs) > 0 {
					id := slowIDs[0]
					slowIDs = slowIDs[1:]
					_, _ = slow.conn.Write([]byte{0x40, 2, byte(id >> 8), byte(id)})
				}
			default:
			}
		}
	})

	// The healthy pair: 500 QoS 1 messages from mosquitto_pub to
	// mosquitto_sub, timed.
	const n = 500
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sub := exec.CommandContext(ctx, "mosquitto_sub", "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-V", "mqttv5",
		"-q", "1", "-t", "healthy/#", "-C", fmt.Sprint(n))
	var out strings.Builder
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	readings := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "plant/meter/count")
	waitSubscriptions(t, g, 4)
	start := time.Now()
	if o, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-V", "mqttv5",
		"-q", "1", "-t", "healthy/x", "-m", "m", "--repeat", fmt.Sprint(n)).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, o)
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("healthy mosquitto_sub: %v (received %d lines)", err, strings.Count(out.String(), "\n"))
	}
	t.Logf("healthy subscriber: %d QoS 1 messages in %v alongside the stuck clients", n, time.Since(start))
	// The device poller keeps publishing: new readings keep arriving.
	before := len(readings.snapshot())
	eventually(t, 10*time.Second, "more device readings", func() bool { return len(readings.snapshot()) >= before+20 })
	close(stop)
	wg.Wait()

	m := g.metrics(t)
	if v := metricValue(m, "fieldgate_broker_delivery_wait_timeouts_total"); v != 2 {
		t.Errorf("fieldgate_broker_delivery_wait_timeouts_total = %v, want 2 (each stuck client given up once)", v)
	}
	if v := metricValue(m, "fieldgate_broker_messages_dropped_total"); v == 0 {
		t.Errorf("fieldgate_broker_messages_dropped_total = 0: the stuck clients lost nothing, so they were never full")
	}
	if ids := stuck.publishIDs(); len(ids) != 1 {
		t.Errorf("the stuck client (Receive Maximum 1, no acknowledgements) received %d QoS 1 messages, want 1", len(ids))
	}
	if !strings.Contains(g.log.String(), "subscriber not keeping up") {
		t.Errorf("no log line about the stuck subscribers")
	}
}
