package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/crashfs"
)

// powerPublisherScript publishes, at QoS argv[2], messages "myhome/q<qos>/seq"
// with payloads "<seq>" (every third padded to 5000 bytes after a space, so
// that it goes to the buffer's value log) from argv[3] on, 32 in flight, and
// every 25th message also retained on "myhome/retained/q<qos>-<n%4>". It
// appends "<seq>" to argv[4] when the message's PUBACK/PUBCOMP arrived and
// "<topic> <seq>" to argv[5] for retained ones. It stops at the first
// disconnect.
const powerPublisherScript = `
import paho.mqtt.client as mqtt, sys, time
port, qos, start, acked_path, ret_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
acked = open(acked_path, "a", buffering=1)
retained = open(ret_path, "a", buffering=1)
mids = {}
gone = []
def on_publish(c, u, mid):
    kind, v = mids.pop(mid)
    if kind == "r": retained.write(v + "\n")
    else: acked.write("%d\n" % v)
def on_disconnect(c, u, rc):
    gone.append(rc)
c = mqtt.Client(client_id="power-q%d" % qos, protocol=mqtt.MQTTv311)
c.max_inflight_messages_set(32)
c.max_queued_messages_set(32)
c.on_publish = on_publish
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port)
c.loop_start()
def pub(topic, payload, retain, rec):
    while not gone:
        info = c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
            continue
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            mids[info.mid] = rec
        return
seq = start
while not gone:
    p = str(seq)
    if seq % 3 == 0: p = p + " " + "v" * 5000
    pub("myhome/q%d/seq" % qos, p, False, ("a", seq))
    if seq % 25 == 0:
        t = "myhome/retained/q%d-%d" % (qos, (seq // 25) % 4)
        pub(t, str(seq), True, ("r", "%s %d" % (t, seq)))
    seq += 1
c.loop_stop()
`

// flapProxy relays 127.0.0.1:port to the upstream while it is on; off
// closes the listener and every relayed connection.
type flapProxy struct {
	t      *testing.T
	port   int
	target int
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
	wg     sync.WaitGroup
}

func (p *flapProxy) set(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == (p.ln != nil) {
		return
	}
	if !on {
		p.ln.Close()
		p.ln = nil
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
		return
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.port))
	if err != nil {
		p.t.Errorf("proxy: %v", err)
		return
	}
	p.ln = ln
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.target))
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = copyConn(u, c); u.Close() })
			p.wg.Go(func() { _, _ = copyConn(c, u); c.Close() })
		}
	})
}

func copyConn(dst, src net.Conn) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err != nil {
			return n, err
		}
	}
}

// powerCuts is the number of cuts in one run: 20, or
// FIELDGATE_POWERCUT_CUTS for a long run.
func powerCuts(t *testing.T) int {
	if s := os.Getenv("FIELDGATE_POWERCUT_CUTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("FIELDGATE_POWERCUT_CUTS=%q", s)
		}
		return n
	}
	return 20
}

// TestPowerCut runs the binary with its data directory on a file system
// that keeps only what was fsync'd (internal/crashfs), while QoS 1 and QoS
// 2 publishers send (a third of the messages over 4 KiB) and retain
// messages, with the upstream absent, present or flapping; at seeded
// random moments it cuts the power and kills the gateway at the same
// moment, then remounts the durable state and restarts it. At the end
// every acknowledged message must reach the upstream mosquitto, in order
// per publisher, and every acknowledged retained message (or a newer one)
// must be retained. The seed is printed (FIELDGATE_POWERCUT_SEED repeats
// a run).
func TestPowerCut(t *testing.T) {
	need(t, python, "mosquitto_sub")
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FIELDGATE_POWERCUT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	cuts := powerCuts(t)
	t.Logf("seed %d (FIELDGATE_POWERCUT_SEED), %d cuts", seed, cuts)
	rng := rand.New(rand.NewPCG(seed, 23))

	c, err := crashfs.Mount(t.TempDir(), t.TempDir())
	if err != nil {
		t.Fatalf("crash-simulating file system (needs /dev/fuse and root): %v", err)
	}
	t.Cleanup(func() {
		if err := c.Unmount(); err != nil {
			t.Error(err)
		}
	})

	up := startMosquitto(t, 0)
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	proxy := &flapProxy{t: t, port: freePort(t), target: up.port}
	t.Cleanup(func() { proxy.set(false); proxy.wg.Wait() })
	time.Sleep(300 * time.Millisecond)

	dir := t.TempDir()
	body := strings.Replace(bridgeConfig(proxy.port, ""), "{{data}}", filepath.Join(c.Mountpoint(), "data"), 1)
	ackedPath := func(qos int) string { return filepath.Join(dir, fmt.Sprintf("acked-q%d", qos)) }
	retPath := filepath.Join(dir, "retained")

	g := startGW(t, dir, body)
	// Every run's log, kept for the report of a failure: what each start
	// dropped or repaired.
	var runs strings.Builder
	defer func() {
		if !t.Failed() {
			return
		}
		for _, l := range strings.Split(runs.String(), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "drop") || strings.Contains(l, "rebuilt") {
				t.Log(l)
			}
		}
	}()
	for cut := range cuts {
		mode := []string{"absent", "present", "flapping"}[cut%3]
		stopFlap := make(chan struct{})
		var flap sync.WaitGroup
		switch mode {
		case "absent":
			proxy.set(false)
		case "present":
			proxy.set(true)
		case "flapping":
			flap.Go(func() {
				on := true
				for {
					proxy.set(on)
					select {
					case <-stopFlap:
						return
					case <-time.After(time.Duration(100+rand.IntN(400)) * time.Millisecond):
					}
					on = !on
				}
			})
		}
		var pubs []*exec.Cmd
		for _, qos := range []int{1, 2} {
			start := (cut + 1) * 1_000_000
			p := exec.Command(python, "-c", powerPublisherScript, fmt.Sprint(g.mqttPort), fmt.Sprint(qos), fmt.Sprint(start), ackedPath(qos), retPath)
			out := &syncBuffer{}
			p.Stdout, p.Stderr = out, out
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			pubs = append(pubs, p)
		}
		wait := time.Duration(300+rng.IntN(2700)) * time.Millisecond
		time.Sleep(wait)
		// The cut: nothing reaches the disk from now on; the gateway
		// dies at the same moment.
		c.Cut()
		g.kill9()
		runs.WriteString(g.log.String())
		close(stopFlap)
		flap.Wait()
		for _, p := range pubs {
			_ = p.Wait()
		}
		if err := c.Remount(); err != nil {
			t.Fatal(err)
		}
		t.Logf("cut %d (upstream %s) after %v: %d + %d acknowledged so far", cut, mode, wait, len(readSeqs(t, ackedPath(1))), len(readSeqs(t, ackedPath(2))))
		g.start()
		if strings.Contains(g.log.String(), "store is corrupt") {
			t.Errorf("cut %d: the restarted gateway found a corrupt store:\n%s", cut, g.log.String())
		}
	}

	// Drain: the upstream present until every acknowledged message is up.
	proxy.set(true)
	acked := map[int][]int{1: readSeqs(t, ackedPath(1)), 2: readSeqs(t, ackedPath(2))}
	got := func() map[int][]int {
		m := map[int][]int{}
		for _, l := range upSub.snapshot() {
			for _, qos := range []int{1, 2} {
				if rest, ok := strings.CutPrefix(l, fmt.Sprintf("sites/e2e/myhome/q%d/seq ", qos)); ok {
					num, _, _ := strings.Cut(rest, " ")
					if n, err := strconv.Atoi(num); err == nil {
						m[qos] = append(m[qos], n)
					}
				}
			}
		}
		return m
	}
	deadline := time.Now().Add(120*time.Second + time.Duration(cuts)*time.Second)
	for time.Now().Before(deadline) {
		m := got()
		missing := 0
		for qos, seqs := range acked {
			seen := map[int]bool{}
			for _, n := range m[qos] {
				seen[n] = true
			}
			for _, n := range seqs {
				if !seen[n] {
					missing++
				}
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	m := got()
	for _, qos := range []int{1, 2} {
		lost, reordered, dups := powerCount(acked[qos], m[qos])
		if lost > 0 {
			seen := map[int]bool{}
			for _, n := range m[qos] {
				seen[n] = true
			}
			var which []int
			for _, n := range acked[qos] {
				if !seen[n] && len(which) < 20 {
					which = append(which, n)
				}
			}
			t.Logf("QoS %d: lost (up to 20; seq/1000000 - 1 is the cut): %v", qos, which)
		}
		t.Logf("QoS %d: %d acknowledged, %d received upstream: %d acknowledged-but-lost, %d reordered, %d duplicated", qos, len(acked[qos]), len(m[qos]), lost, reordered, dups)
		if lost > 0 || reordered > 0 {
			t.Errorf("QoS %d: %d acknowledged messages lost, %d reordered (seed %d)", qos, lost, reordered, seed)
		}
	}

	// Retained: each topic holds its last acknowledged value or a newer one.
	want := map[string]int{}
	for _, l := range readLines(t, retPath) {
		topic, v, _ := strings.Cut(l, " ")
		if n, err := strconv.Atoi(v); err == nil {
			want[topic] = max(want[topic], n)
		}
	}
	have := map[string]int{}
	out, _ := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-t", "myhome/retained/#", "-v", "-W", "2", "--retained-only").Output()
	for _, l := range strings.Split(string(out), "\n") {
		topic, v, _ := strings.Cut(l, " ")
		if n, err := strconv.Atoi(v); err == nil {
			have[topic] = n
		}
	}
	lostRetained := 0
	for topic, n := range want {
		if have[topic] < n {
			lostRetained++
			t.Errorf("retained %s: acknowledged %d, the broker retains %d after the cuts (0: none)", topic, n, have[topic])
		}
	}
	t.Logf("retained: %d topics acknowledged, %d lost", len(want), lostRetained)
	g.stop()
}

// powerCount compares the acknowledged seqs with the upstream arrivals:
// acknowledged but never arrived, first arrivals out of order, repeats.
func powerCount(acked, got []int) (lost, reordered, dups int) {
	seen := map[int]bool{}
	last := -1
	for _, n := range got {
		if seen[n] {
			dups++
			continue
		}
		seen[n] = true
		if n < last {
			reordered++
		}
		last = n
	}
	for _, n := range acked {
		if !seen[n] {
			lost++
		}
	}
	return lost, reordered, dups
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
