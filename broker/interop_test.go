package broker

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// run runs a peer program and returns its combined output and error.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, needPeer(t, name), args...).CombinedOutput()
	return string(out), err
}

// startSub starts mosquitto_sub and waits until some client subscribes to
// a filter matching topic.
func startSub(t *testing.T, r *running, topic string, args ...string) func() string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, needPeer(t, "mosquitto_sub"), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	waitFor(t, "mosquitto_sub to subscribe", func() bool {
		return len(r.srv.Load().Topics.Subscribers(topic).Subscriptions) > 0
	})
	return func() string {
		err := cmd.Wait()
		cancel()
		if err != nil {
			t.Fatalf("mosquitto_sub %v: %v: %s", args, err, out.String())
		}
		return out.String()
	}
}

func TestMosquittoClientsEveryQoS(t *testing.T) {
	r := start(t, anonCfg(), t.TempDir(), nil)
	h, p := hostPort(t, r.addr(0))
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, q := range []string{"0", "1", "2"} {
			t.Run(v+"/qos"+q, func(t *testing.T) {
				topic := "interop/" + v + "/" + q
				wait := startSub(t, r, topic, "-h", h, "-p", p, "-V", v, "-q", q, "-t", topic, "-C", "1", "-W", "30", "-v")
				if out, err := run(t, "mosquitto_pub", "-h", h, "-p", p, "-V", v, "-q", q, "-t", topic, "-m", "hello "+q); err != nil {
					t.Fatalf("mosquitto_pub: %v: %s", err, out)
				}
				if got, want := strings.TrimSpace(wait()), topic+" hello "+q; got != want {
					t.Fatalf("mosquitto_sub printed %q, want %q", got, want)
				}
			})
		}
	}
}

func authCfg(t *testing.T) Config {
	cfg := anonCfg()
	cfg.Auth = AuthConfig{
		Users: []UserConfig{{Username: "alice", PasswordHash: hashFor(t, "secret")}, {Username: "bob", PasswordHash: hashFor(t, "pw")}},
		ACL: []ACLRule{
			{Username: "alice", Publish: []string{"home/{username}/#"}, Subscribe: []string{"home/#"}},
			{Username: "*", Subscribe: []string{"public/#"}, Deny: []string{"home/secret/#"}},
			{Username: "bob", ClientID: "bob-1", Publish: []string{"public/#"}},
		},
	}
	return cfg
}

func TestMosquittoAuth(t *testing.T) {
	r := start(t, authCfg(t), t.TempDir(), nil)
	h, p := hostPort(t, r.addr(0))
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, tc := range []struct {
			name string
			args []string
			ok   bool
		}{
			{"good password", []string{"-u", "alice", "-P", "secret"}, true},
			{"bad password", []string{"-u", "alice", "-P", "wrong"}, false},
			{"unknown user", []string{"-u", "eve", "-P", "secret"}, false},
			{"anonymous", nil, false},
		} {
			t.Run(v+"/"+tc.name, func(t *testing.T) {
				args := append([]string{"-h", h, "-p", p, "-V", v, "-q", "1", "-t", "home/alice/x", "-m", "1"}, tc.args...)
				out, err := run(t, "mosquitto_pub", args...)
				if tc.ok && err != nil {
					t.Fatalf("refused: %v: %s", err, out)
				}
				lo := strings.ToLower(out)
				if !tc.ok && (err == nil || !strings.Contains(lo, "not authori") && !strings.Contains(lo, "bad user name or password")) {
					t.Fatalf("want a credentials refusal, got err=%v out=%q", err, out)
				}
			})
		}
	}
	if st := r.Stats(); st.AuthFailures != 6 {
		t.Fatalf("AuthFailures = %d, want 6", st.AuthFailures)
	}
}

func TestMosquittoACL(t *testing.T) {
	r := start(t, authCfg(t), t.TempDir(), nil)
	h, p := hostPort(t, r.addr(0))
	got := make(chan Message, 100)
	unsub, err := r.Subscribe("#", func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	alice := []string{"-h", h, "-p", p, "-u", "alice", "-P", "secret"}

	for _, v := range []string{"mqttv311", "mqttv5"} {
		// Publish: home/alice/... allowed; home/bob/... refused and never delivered.
		for _, topic := range []string{"home/bob/x", "home/alice/x"} {
			_, _ = run(t, "mosquitto_pub", append(alice, "-V", v, "-q", "1", "-t", topic, "-m", v)...)
		}
		if m := <-got; m.Topic != "home/alice/x" || string(m.Payload) != v {
			t.Fatalf("%s: first delivered %q %q, want home/alice/x (home/bob/x must be refused)", v, m.Topic, m.Payload)
		}
	}

	// Subscribe: a refused filter is a failure code in SUBACK; mosquitto_sub reports it.
	for _, v := range []string{"mqttv311", "mqttv5"} {
		out, _ := run(t, "mosquitto_sub", append(alice, "-V", v, "-t", "other/#", "-C", "1", "-W", "5")...)
		if !strings.Contains(out, "All subscription requests were denied") {
			t.Fatalf("%s: refused subscription: mosquitto_sub printed %q, want a denied SUBACK", v, out)
		}
	}

	// "*" rules apply to every user; deny wins over alice's home/#.
	wait := startSub(t, r, "public/news", append(alice, "-V", "mqttv5", "-t", "home/#", "-t", "public/#", "-C", "2", "-W", "30", "-v")...)
	for _, m := range []Message{{Topic: "home/secret/code"}, {Topic: "home/alice/y"}, {Topic: "public/news"}} {
		m.Payload = []byte("m")
		if err := r.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if out := wait(); out != "home/alice/y m\npublic/news m\n" {
		t.Fatalf("subscriber received %q; home/secret/code must be filtered", out)
	}

	// clientid-scoped rule: bob may publish to public/ only as bob-1.
	bob := []string{"-h", h, "-p", p, "-u", "bob", "-P", "pw", "-q", "1", "-t", "public/bob", "-V", "mqttv5"}
	for _, id := range []string{"bob-2", "bob-1"} {
		_, _ = run(t, "mosquitto_pub", append(bob, "-i", id, "-m", id)...)
	}
	for m := range got {
		if m.Topic == "public/bob" {
			if string(m.Payload) != "bob-1" {
				t.Fatalf("public/bob delivered from %s, want only bob-1", m.Payload)
			}
			break
		}
	}
}

func TestPythonPahoEveryQoS(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("%s is required (apt-get install python3-paho-mqtt): %v", py, err)
	}
	r := start(t, anonCfg(), t.TempDir(), nil)
	h, p := hostPort(t, r.addr(0))
	script := filepath.Join(t.TempDir(), "pubsub.py")
	if err := os.WriteFile(script, []byte(pahoScript), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"3", "5"} {
		t.Run("mqtt"+v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, py, script, h, p, v).CombinedOutput()
			if err != nil {
				t.Fatalf("paho script: %v: %s", err, out)
			}
			want := "acked 3\nreceived ['py/0:m0', 'py/1:m1', 'py/2:m2']\n"
			if string(out) != want {
				t.Fatalf("paho script printed %q, want %q", out, want)
			}
		})
	}
}

// pahoScript subscribes to py/# at QoS 2, publishes one message at each QoS
// and prints which publishes were acknowledged and what arrived.
const pahoScript = `
import sys, time, threading
import paho.mqtt.client as mqtt
host, port, ver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
proto = mqtt.MQTTv5 if ver == "5" else mqtt.MQTTv311
got, acked, subscribed = [], [], threading.Event()
done = threading.Event()
def on_message(c, u, m):
    got.append(m.topic + ":" + m.payload.decode())
    if len(got) == 3: done.set()
def on_subscribe(c, u, mid, granted, *rest): subscribed.set()
def on_publish(c, u, mid): acked.append(mid)
c = mqtt.Client(client_id="py-" + ver, protocol=proto)
c.on_message, c.on_subscribe, c.on_publish = on_message, on_subscribe, on_publish
c.connect(host, port)
c.loop_start()
c.subscribe("py/#", qos=2)
if not subscribed.wait(30): sys.exit("no SUBACK")
for q in range(3):
    c.publish("py/%d" % q, "m%d" % q, qos=q).wait_for_publish(30)
if not done.wait(30): sys.exit("received only %r" % got)
c.disconnect(); c.loop_stop()
print("acked", len(acked))
print("received", sorted(got))
`

func TestMosquittoPersistentSessionAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	r := start(t, anonCfg(), dir, nil)
	h, p := hostPort(t, r.addr(0))
	for _, v := range []string{"mqttv311", "mqttv5"} {
		id := "persist-" + v
		args := []string{"-h", h, "-p", p, "-V", v, "-q", "1", "-i", id, "-c", "-t", "queue/" + v}
		if v == "mqttv5" {
			args = append(args, "-x", "3600")
		}
		// Create the session, then leave.
		if out, err := run(t, "mosquitto_sub", append(args, "-E")...); err != nil {
			t.Fatalf("mosquitto_sub -E: %v: %s", err, out)
		}
	}
	const queued = 20 // enough to be shuffled by mochi's unstable resend order
	var want strings.Builder
	for i := range queued {
		fmt.Fprintf(&want, "q%d\n", i)
		for _, v := range []string{"mqttv311", "mqttv5"} {
			if err := r.Publish(context.Background(), Message{Topic: "queue/" + v, QoS: 1, Payload: fmt.Appendf(nil, "q%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.stop(t)

	r2 := start(t, anonCfg(), dir, nil)
	h, p = hostPort(t, r2.addr(0))
	for _, v := range []string{"mqttv311", "mqttv5"} {
		args := []string{"-h", h, "-p", p, "-V", v, "-q", "1", "-i", "persist-" + v, "-c", "-t", "queue/" + v, "-C", fmt.Sprint(queued), "-W", "30"}
		if v == "mqttv5" {
			args = append(args, "-x", "3600")
		}
		out, err := run(t, "mosquitto_sub", args...)
		if err != nil || out != want.String() {
			t.Fatalf("%s after restart: err=%v, received %q, want %q (all, in order)", v, err, out, want.String())
		}
	}
}

func TestRetainedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	r := start(t, anonCfg(), dir, nil)
	h, p := hostPort(t, r.addr(0))
	if out, err := run(t, "mosquitto_pub", "-h", h, "-p", p, "-q", "1", "-r", "-t", "ret/net", "-m", "from-net"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := r.Publish(context.Background(), Message{Topic: "ret/inproc", Payload: []byte("from-inproc"), Retain: true, QoS: 1, Origin: "devices"}); err != nil {
		t.Fatal(err)
	}
	r.stop(t)

	r2 := start(t, anonCfg(), dir, nil)
	h, p = hostPort(t, r2.addr(0))
	for _, v := range []string{"mqttv311", "mqttv5"} {
		out, err := run(t, "mosquitto_sub", "-h", h, "-p", p, "-V", v, "-t", "ret/#", "-C", "2", "-W", "30", "-v")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) != 2 || !strings.Contains(out, "ret/net from-net") || !strings.Contains(out, "ret/inproc from-inproc") {
			t.Fatalf("%s: retained after restart: err=%v out=%q", v, err, out)
		}
	}
	if st := r2.Stats(); st.Retained != 2 {
		t.Fatalf("Stats.Retained = %d after restart", st.Retained)
	}
}
