package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func bcryptHash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func authConfig(t testing.TB) string {
	return fmt.Sprintf(`gateway:
  id: e2e
  data_dir: {{data}}
  http: {address: 127.0.0.1:{{http}}}
broker:
  listeners:
    - {type: tcp, address: 127.0.0.1:{{mqtt}}}
  auth:
    anonymous: false
    users:
      - {username: alice, password_hash: %q}
      - {username: bob, password_hash: %q}
    acl:
      - {username: alice, publish: ["myhome/#", "will/#"], subscribe: ["myhome/#", "will/#", "$SYS/#"]}
      - {username: bob, publish: ["bob/#"], subscribe: ["bob/#", "myhome/+/set/#"]}
`, bcryptHash(t, "alice-pw"), bcryptHash(t, "bob-pw"))
}

func alice(g *gw, extra ...string) []string {
	return append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-u", "alice", "-P", "alice-pw"}, extra...)
}

func bob(g *gw, extra ...string) []string {
	return append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-u", "bob", "-P", "bob-pw"}, extra...)
}

// Real clients (mosquitto 3.1.1 and 5, paho) against the binary: every QoS,
// auth, ACL.
func TestBrokerClientsQoSAuthACL(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	g := startGW(t, t.TempDir(), authConfig(t))

	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			s := startSub(t, alice(g, "-V", v, "-q", "2", "-t", "myhome/#")...)
			pub := func(topic, payload string) {
				if out, err := mosqPub(alice(g, "-V", v, "-q", "1", "-t", topic, "-m", payload)...); err != nil {
					t.Fatalf("publish: %v: %s", err, out)
				}
			}
			waitSubscribed(t, s, pub, "myhome/probe")
			for qos := 0; qos <= 2; qos++ {
				topic := fmt.Sprintf("myhome/%s/qos%d", v, qos)
				if out, err := mosqPub(alice(g, "-V", v, "-q", fmt.Sprint(qos), "-t", topic, "-m", "hello")...); err != nil {
					t.Fatalf("qos %d publish: %v: %s", qos, err, out)
				}
				eventually(t, 5*time.Second, topic, func() bool { return s.has(topic + " hello") })
			}

			// Wrong password and anonymous are refused.
			if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-V", v, "-u", "alice", "-P", "wrong", "-t", "myhome/x", "-m", "x"); err == nil {
				t.Errorf("wrong password accepted: %s", out)
			}
			if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-V", v, "-t", "myhome/x", "-m", "x"); err == nil {
				t.Errorf("anonymous accepted: %s", out)
			}

			// bob may not publish under myhome/: never delivered.
			_, _ = mosqPub(bob(g, "-V", v, "-q", "1", "-t", "myhome/"+v+"/forbidden", "-m", "nope")...)
			// bob may not subscribe to myhome/#: he gets nothing of alice's.
			bs := startSub(t, bob(g, "-V", v, "-q", "1", "-t", "myhome/#", "-t", "bob/#")...)
			waitSubscribed(t, bs, func(topic, payload string) {
				_, _ = mosqPub(bob(g, "-V", v, "-q", "1", "-t", topic, "-m", payload)...)
			}, "bob/probe")
			pub("myhome/"+v+"/after", "secret")
			eventually(t, 5*time.Second, "alice's own copy", func() bool { return s.has("myhome/" + v + "/after secret") })
			time.Sleep(200 * time.Millisecond) // a wrong delivery would have been on the wire by now
			for _, l := range bs.snapshot() {
				if strings.HasPrefix(l, "myhome/") {
					t.Errorf("bob received %q despite the subscribe ACL", l)
				}
			}
			for _, l := range s.snapshot() {
				if strings.Contains(l, "forbidden") {
					t.Errorf("alice received %q that bob was not allowed to publish", l)
				}
			}
		})
	}

	// paho: QoS 2 round trip with a second client implementation.
	t.Run("paho", func(t *testing.T) {
		need(t, python)
		script := fmt.Sprintf(`
import paho.mqtt.client as mqtt, sys, time
got = []
def on_message(c, u, m): got.append((m.topic, m.payload.decode(), m.qos))
sub = mqtt.Client(client_id="paho-sub", protocol=mqtt.MQTTv5)
sub.username_pw_set("alice", "alice-pw")
sub.on_message = on_message
sub.connect("127.0.0.1", %d)
sub.subscribe("myhome/paho/#", qos=2)
sub.loop_start()
time.sleep(0.5)
pub = mqtt.Client(client_id="paho-pub", protocol=mqtt.MQTTv311)
pub.username_pw_set("alice", "alice-pw")
pub.connect("127.0.0.1", %d)
pub.loop_start()
for q in (0, 1, 2):
    pub.publish("myhome/paho/q%%d" %% q, "v%%d" %% q, qos=q).wait_for_publish(5)
deadline = time.time() + 5
while len(got) < 3 and time.time() < deadline: time.sleep(0.05)
print(sorted(got))
`, g.mqttPort, g.mqttPort)
		out, err := exec.Command(python, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("paho: %v\n%s", err, out)
		}
		want := "[('myhome/paho/q0', 'v0', 0), ('myhome/paho/q1', 'v1', 1), ('myhome/paho/q2', 'v2', 2)]"
		if strings.TrimSpace(string(out)) != want {
			t.Fatalf("paho got %s, want %s", out, want)
		}
	})
}

// Retained messages and persistent sessions survive a gateway restart.
func TestBrokerRetainedAndSessionAcrossRestart(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	g := startGW(t, t.TempDir(), authConfig(t))

	if out, err := mosqPub(alice(g, "-q", "1", "-r", "-t", "myhome/hall/temperature", "-m", "21.5")...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// A persistent session: subscribe once, then go away.
	for _, v := range []string{"mqttv311", "mqttv5"} {
		args := alice(g, "-V", v, "-q", "1", "-c", "-i", "sess-"+v, "-t", "myhome/queued/#", "-W", "1")
		if v == "mqttv5" {
			args = append(args, "-x", "3600")
		}
		// -W 1: exit after a second, leaving the subscription in the session.
		_ = exec.Command("mosquitto_sub", args...).Run()
	}
	for i := 1; i <= 3; i++ {
		if out, err := mosqPub(alice(g, "-q", "1", "-t", fmt.Sprintf("myhome/queued/%d", i), "-m", fmt.Sprint(i))...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	g.stop()
	g.start()

	s := startSub(t, alice(g, "-q", "1", "-t", "myhome/hall/#")...)
	eventually(t, 5*time.Second, "retained message after restart", func() bool { return s.has("myhome/hall/temperature 21.5") })

	for _, v := range []string{"mqttv311", "mqttv5"} {
		args := alice(g, "-V", v, "-q", "1", "-c", "-i", "sess-"+v, "-t", "myhome/queued/#")
		if v == "mqttv5" {
			args = append(args, "-x", "3600")
		}
		qs := startSub(t, args...)
		for i := 1; i <= 3; i++ {
			line := fmt.Sprintf("myhome/queued/%d %d", i, i)
			eventually(t, 5*time.Second, v+" queued "+line, func() bool { return qs.has(line) })
		}
	}
}

// A client that vanishes without DISCONNECT has its will published.
func TestBrokerWill(t *testing.T) {
	need(t, python, "mosquitto_sub")
	g := startGW(t, t.TempDir(), authConfig(t))
	s := startSub(t, alice(g, "-q", "1", "-t", "will/#", "-t", "myhome/#")...)
	waitSubscribed(t, s, func(topic, payload string) {
		_, _ = mosqPub(alice(g, "-q", "1", "-t", topic, "-m", payload)...)
	}, "myhome/probe")
	for _, proto := range []string{"MQTTv311", "MQTTv5"} {
		script := fmt.Sprintf(`
import paho.mqtt.client as mqtt, time, os
c = mqtt.Client(client_id="dying-%s", protocol=mqtt.%s)
c.username_pw_set("alice", "alice-pw")
c.will_set("will/%s", "gone", qos=1, retain=False)
c.connect("127.0.0.1", %d)
c.loop_start()
time.sleep(0.3)
os._exit(0)  # no DISCONNECT: the socket just closes
`, proto, proto, proto, g.mqttPort)
		if out, err := exec.Command(python, "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		eventually(t, 5*time.Second, "will of "+proto, func() bool { return s.has("will/" + proto + " gone") })
	}
}
