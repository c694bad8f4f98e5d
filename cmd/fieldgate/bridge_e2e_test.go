package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func bridgeConfig(upstreamPort int, extra string) string {
	return fmt.Sprintf(anonHeader+`bridge:
  upstream:
    url: mqtt://127.0.0.1:%d
    protocol: 5
    client_id: "{gateway}"
  forward:
    - {filter: "myhome/#", prefix: "sites/{gateway}/", qos: 1}
%s`, upstreamPort, extra)
}

// publisherScript publishes QoS 1 messages with payloads start..start+n-1 on
// one connection, 64 in flight, and appends every seq whose PUBACK arrived
// to the acked file. It stops at the first disconnect.
const publisherScript = `
import paho.mqtt.client as mqtt, sys, time
port, start, n, acked_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
acked = open(acked_path, "a", buffering=1)
mids = {}
gone = []
def on_publish(c, u, mid):
    acked.write("%d\n" % mids.pop(mid))
def on_disconnect(c, u, rc):
    gone.append(rc)
c = mqtt.Client(client_id="pub-%d" % start, protocol=mqtt.MQTTv311)
c.max_inflight_messages_set(64)
c.max_queued_messages_set(64)
c.on_publish = on_publish
c.on_disconnect = on_disconnect
c.connect("127.0.0.1", port)
c.loop_start()
for seq in range(start, start + n):
    if gone: break
    while not gone:
        info = c.publish("myhome/seq", str(seq), qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
            continue
        break
    if gone: break
    if info.rc != mqtt.MQTT_ERR_SUCCESS: break
    mids[info.mid] = seq
deadline = time.time() + 10
while mids and not gone and time.time() < deadline: time.sleep(0.01)
c.loop_stop()
`

func readSeqs(t testing.TB, path string) []int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	defer f.Close()
	var seqs []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if n, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			seqs = append(seqs, n)
		}
	}
	return seqs
}

// upstreamSeqs parses "sites/e2e/myhome/seq N" lines in arrival order.
func upstreamSeqs(s *sub) []int {
	var seqs []int
	for _, l := range s.snapshot() {
		if rest, ok := strings.CutPrefix(l, "sites/e2e/myhome/seq "); ok {
			if n, err := strconv.Atoi(rest); err == nil {
				seqs = append(seqs, n)
			}
		}
	}
	return seqs
}

// checkDelivery verifies G2 and G3: every acked seq arrived, and first
// arrivals are in publish order. It returns the number of duplicates.
func checkDelivery(t testing.TB, acked, got []int) (dups int) {
	t.Helper()
	seen := map[int]bool{}
	last := -1
	for _, n := range got {
		if seen[n] {
			dups++
			continue
		}
		seen[n] = true
		if n < last {
			t.Errorf("reordered: %d arrived after %d", n, last)
		}
		last = n
	}
	missing := 0
	for _, n := range acked {
		if !seen[n] {
			if missing < 5 {
				t.Errorf("acknowledged message %d never arrived upstream", n)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged messages lost", missing, len(acked))
	}
	return dups
}

// kill -9 of the gateway mid-stream loses nothing that was acknowledged and
// reorders nothing (G1, G2, G3), against Debian's mosquitto upstream.
func TestBridgeKill9MidStream(t *testing.T) {
	need(t, python, "mosquitto_sub")
	up := startMosquitto(t, 0)
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	time.Sleep(300 * time.Millisecond)

	dir := t.TempDir()
	g := startGW(t, dir, bridgeConfig(up.port, ""))
	ackedPath := filepath.Join(dir, "acked")

	const n = 20000
	pub := exec.Command(python, "-c", publisherScript, fmt.Sprint(g.mqttPort), "0", fmt.Sprint(n), ackedPath)
	pubOut := &syncBuffer{}
	pub.Stdout, pub.Stderr = pubOut, pubOut
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "a third of the messages acknowledged", func() bool {
		return len(readSeqs(t, ackedPath)) >= n/3
	})
	g.kill9()
	_ = pub.Wait()
	acked := readSeqs(t, ackedPath)
	t.Logf("killed after %d acknowledged publishes", len(acked))

	g.start()
	// A second publisher after the restart continues the sequence.
	next := n
	pub2 := exec.Command(python, "-c", publisherScript, fmt.Sprint(g.mqttPort), fmt.Sprint(next), "2000", ackedPath)
	if out, err := pub2.CombinedOutput(); err != nil {
		t.Fatalf("second publisher: %v\n%s", err, out)
	}
	acked = readSeqs(t, ackedPath)
	eventually(t, 90*time.Second, "every acknowledged message upstream", func() bool {
		seen := map[int]bool{}
		for _, s := range upstreamSeqs(upSub) {
			seen[s] = true
		}
		for _, a := range acked {
			if !seen[a] {
				return false
			}
		}
		return true
	})
	dups := checkDelivery(t, acked, upstreamSeqs(upSub))
	t.Logf("acknowledged %d, received %d, duplicates %d", len(acked), len(upstreamSeqs(upSub)), dups)
	g.stop()
}

// A corrupt buffer directory and a corrupt broker store are set aside and
// the gateway still starts and forwards (G7).
func TestCorruptDataDir(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	up := startMosquitto(t, 0)
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	dir := t.TempDir()
	bufDir := filepath.Join(dir, "data", "buffer")
	if err := os.MkdirAll(bufDir, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"MANIFEST", "000001.vlog", "000002.sst", "KEYREGISTRY"} {
		if err := os.WriteFile(filepath.Join(bufDir, name), []byte("this is not a badger file\x00\xff\xfe garbage"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	brokerDir := filepath.Join(dir, "data", "broker")
	if err := os.MkdirAll(brokerDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(brokerDir, "broker.db"), []byte("not a bbolt file either"), 0o640); err != nil {
		t.Fatal(err)
	}
	g := startGW(t, dir, bridgeConfig(up.port, ""))
	if aside, _ := filepath.Glob(filepath.Join(brokerDir, "broker.db.corrupt-*")); len(aside) != 1 {
		t.Errorf("corrupt broker store not set aside: %v", aside)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "data", "buffer.corrupt-*"))
	if len(aside) != 1 {
		t.Fatalf("corrupt buffer not set aside: %v\n%s", aside, g.log.String())
	}
	if !strings.Contains(strings.ToLower(g.log.String()), "corrupt") {
		t.Errorf("no clear log line about the corrupt store:\n%s", g.log.String())
	}
	if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/seq", "-m", "7"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "message forwarded after recovery", func() bool {
		return upSub.has("sites/e2e/myhome/seq 7")
	})
	g.stop()
}

// Commands from the upstream reach local subscribers through a subscribe
// route with strip_prefix, and are never forwarded back up even though the
// local topic matches a forward route.
func TestBridgeSubscribeRouteNoLoop(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	up := startMosquitto(t, 0)
	upSub := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/#")
	g := startGW(t, t.TempDir(), bridgeConfig(up.port, `  subscribe:
    - {filter: "sites/{gateway}/cmd/#", strip_prefix: "sites/{gateway}/cmd/", qos: 1}
`))
	local := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/#")
	// Wait until the bridge is connected and forwarding.
	waitSubscribed(t, upSub, func(topic, payload string) {
		_, _ = mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/probe", "-m", payload)
	}, "sites/e2e/myhome/probe")
	eventually(t, 10*time.Second, "command delivered locally", func() bool {
		_, _ = mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-q", "1", "-t", "sites/e2e/cmd/myhome/boiler/setpoint/set", "-m", "55")
		time.Sleep(100 * time.Millisecond)
		return local.has("myhome/boiler/setpoint/set 55")
	})
	// A local publish on the same topic is forwarded (it did not come from upstream)...
	if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", "myhome/marker", "-m", "end"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	eventually(t, 10*time.Second, "marker upstream", func() bool { return upSub.has("sites/e2e/myhome/marker end") })
	// ...but the command itself never went back up.
	for _, l := range upSub.snapshot() {
		if strings.HasPrefix(l, "sites/e2e/myhome/boiler/setpoint/set") {
			t.Errorf("command looped back upstream: %q", l)
		}
	}
	g.stop()
}
