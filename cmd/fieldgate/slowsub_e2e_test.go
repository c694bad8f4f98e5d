package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// slowSubConfig gives clients a 48-packet write queue (max_queued_messages
// 32 + max_inflight 16), far less than the bursts below.
const slowSubConfig = anonHeader + "  limits: {max_inflight: 16, max_queued_messages: 32, delivery_wait: %s}\n"

// burst publishes n messages of 16 KiB at QoS 0 on topic with mosquitto_pub.
func burst(t *testing.T, g *gw, topic string, n int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, bytes.Repeat([]byte{'x'}, 16<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort),
		"-q", "0", "-t", topic, "-f", file, "--repeat", fmt.Sprint(n)).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
}

// countSub runs mosquitto_sub -C n on filter with its output going to a pipe
// that is only read once read is called; until then the subscriber stops
// reading from the gateway as soon as the pipe is full. read returns how
// many messages arrived before mosquitto_sub exited, or -1 if it had not
// exited after 30 s.
func countSub(t *testing.T, g *gw, filter string, n int) (read func() int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "0", "-t", filter, "-C", fmt.Sprint(n))
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = r.Close() })
	return func() int {
		done := make(chan int, 1)
		go func() {
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 64<<10), 64<<10)
			lines := 0
			for sc.Scan() {
				lines++
			}
			done <- lines
		}()
		select {
		case lines := <-done:
			return lines
		case <-time.After(30 * time.Second):
			return -1
		}
	}
}

// waitSubscriptions waits until the gateway counts n subscriptions.
func waitSubscriptions(t *testing.T, g *gw, n float64) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%v subscriptions", n), func() bool {
		return metricValue(g.metrics(t), "fieldgate_broker_subscriptions") >= n
	})
}

// A QoS 0 subscriber that falls behind (mosquitto_sub whose output is not
// read for a while) slows its publisher (mosquitto_pub) instead of losing
// messages: every one arrives, and /metrics counts the waits.
func TestSlowQoS0SubscriberE2E(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	g := startGW(t, t.TempDir(), fmt.Sprintf(slowSubConfig, "10s"))
	const n = 1024 // 16 MiB: more than the pipe, the socket buffers and the write queue hold
	read := countSub(t, g, "slow/#", n)
	waitSubscriptions(t, g, 1)
	published := make(chan struct{})
	go func() { defer close(published); burst(t, g, "slow/x", n) }()
	time.Sleep(time.Second) // the subscriber falls behind
	if got := read(); got != n {
		t.Fatalf("slow subscriber received %d of %d (-1: not all within 30 s)", got, n)
	}
	<-published
	m := g.metrics(t)
	if v := metricValue(m, "fieldgate_broker_messages_dropped_total"); v != 0 {
		t.Errorf("fieldgate_broker_messages_dropped_total = %v, want 0", v)
	}
	if v := metricValue(m, "fieldgate_broker_delivery_waits_total"); v < 1 {
		t.Errorf("fieldgate_broker_delivery_waits_total = %v, want at least 1 (the publisher was held back)", v)
	}
	if v := metricValue(m, "fieldgate_broker_delivery_wait_timeouts_total"); v != 0 {
		t.Errorf("fieldgate_broker_delivery_wait_timeouts_total = %v, want 0", v)
	}
}

// A QoS 0 subscriber that stopped reading holds its publisher for
// delivery_wait once; then it is skipped (and drops what does not fit)
// while a healthy subscriber still receives everything.
func TestStuckQoS0SubscriberE2E(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	g := startGW(t, t.TempDir(), fmt.Sprintf(slowSubConfig, "300ms"))
	// The stuck subscriber: MQTT 3.1.1 CONNECT and SUBSCRIBE stuck/# at QoS
	// 0, then nothing is ever read.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.mqttPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connect := []byte{0x10, 17, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 5, 's', 't', 'u', 'c', 'k'}
	subscribe := []byte{0x82, 12, 0, 1, 0, 7, 's', 't', 'u', 'c', 'k', '/', '#', 0}
	if _, err := conn.Write(append(connect, subscribe...)); err != nil {
		t.Fatal(err)
	}
	const n = 1024 // 16 MiB: more than the stuck connection's socket buffers
	read := countSub(t, g, "stuck/#", n)
	waitSubscriptions(t, g, 2)
	got := make(chan int, 1)
	go func() { got <- read() }() // the healthy subscriber reads as fast as it can
	burst(t, g, "stuck/x", n)
	if v := <-got; v != n {
		t.Fatalf("healthy subscriber received %d of %d (-1: not all within 30 s)", v, n)
	}
	m := g.metrics(t)
	if v := metricValue(m, "fieldgate_broker_delivery_wait_timeouts_total"); v != 1 {
		t.Errorf("fieldgate_broker_delivery_wait_timeouts_total = %v, want 1 (then the stuck subscriber is not waited for)", v)
	}
	if v := metricValue(m, "fieldgate_broker_messages_dropped_total"); v == 0 {
		t.Errorf("fieldgate_broker_messages_dropped_total = 0: the stuck subscriber was never full")
	}
}
