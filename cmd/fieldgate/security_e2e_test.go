package main

// Attacks from issue 16 against the binary: each test reproduces one and
// checks that it no longer works.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A user may not use a will to publish where its ACL does not let it:
// the CONNECT is refused (MQTT 5 0x87, 3.1.1 0x05) and nothing is
// delivered when the connection drops.
func TestAttackWillBypassesACL(t *testing.T) {
	g := startGW(t, t.TempDir(), authConfig(t))
	watcher := dialMQTT(t, g.mqttPort)
	if _, code := watcher.connack(connectOpts{clientID: "watcher", clean: true, user: "alice", pass: "alice-pw"}); code != 0 {
		t.Fatalf("alice: CONNACK %#x", code)
	}
	watcher.send(subscribePacket(false, "myhome/#", 1))

	for _, tc := range []struct {
		name string
		v5   bool
		want byte
	}{{"mqttv311", false, 0x05}, {"mqttv5", true, 0x87}} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialMQTT(t, g.mqttPort)
			_, code := c.connack(connectOpts{v5: tc.v5, clientID: "bob-" + tc.name, clean: true, user: "bob", pass: "bob-pw",
				willTopic: "myhome/groundfloor/boiler/setpoint/set", willQoS: 1, willRetain: true})
			if code != tc.want {
				t.Fatalf("CONNACK with a denied will topic: got %#x, want %#x", code, tc.want)
			}
			_ = c.c.Close()
			if topic, payload, ok := watcher.nextPublish(false, 2*time.Second); ok {
				t.Fatalf("the refused client's will was delivered: %s %q", topic, payload)
			}
			// A will the user may publish is still accepted.
			ok := dialMQTT(t, g.mqttPort)
			if _, code := ok.connack(connectOpts{v5: tc.v5, clientID: "bob-ok-" + tc.name, clean: true, user: "bob", pass: "bob-pw",
				willTopic: "bob/will", willQoS: 1}); code != 0 {
				t.Fatalf("CONNACK with an allowed will topic: %#x", code)
			}
		})
	}
	if !strings.Contains(g.log.String(), "login failed: user=bob client=bob-mqttv5") ||
		!strings.Contains(g.log.String(), "(will topic denied by ACL)") {
		t.Errorf("no readable log line for the refused will:\n%s", g.log.String())
	}
}

// A persistent session belongs to the user that created it: another user
// reusing its client id is refused, neither takes over the live connection
// nor receives the queued messages.
func TestAttackSessionTakeoverAcrossUsers(t *testing.T) {
	g := startGW(t, t.TempDir(), authConfig(t))
	for _, v5 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v5=%v", v5), func(t *testing.T) {
			id := fmt.Sprintf("alice-dev-%v", v5)
			owner := connectOpts{v5: v5, clientID: id, user: "alice", pass: "alice-pw", sessionExp: 3600}
			first := dialMQTT(t, g.mqttPort)
			if _, code := first.connack(owner); code != 0 {
				t.Fatalf("alice: CONNACK %#x", code)
			}
			first.send(subscribePacket(v5, "myhome/secret", 1))
			if h, _, err := first.read(5 * time.Second); err != nil || h>>4 != 9 {
				t.Fatalf("SUBACK: %#x %v", h, err)
			}

			// Live: bob tries to take over the connected session.
			bob := dialMQTT(t, g.mqttPort)
			present, code := bob.connack(connectOpts{v5: v5, clientID: id, user: "bob", pass: "bob-pw", sessionExp: 3600})
			if code == 0 {
				t.Fatalf("bob took over alice's live session (session present %v)", present)
			}
			first.send([]byte{0xC0, 0}) // PINGREQ: the owner is still connected
			if h, _, err := first.read(5 * time.Second); err != nil || h != 0xD0 {
				t.Fatalf("alice was disconnected by bob's attempt: %#x %v", h, err)
			}

			// Offline: a message queues for alice; bob tries again.
			_ = first.c.Close()
			time.Sleep(200 * time.Millisecond)
			if out, err := mosqPub(alice(g, "-q", "1", "-t", "myhome/secret", "-m", "for-alice-only")...); err != nil {
				t.Fatalf("publish: %v: %s", err, out)
			}
			bob2 := dialMQTT(t, g.mqttPort)
			present, code = bob2.connack(connectOpts{v5: v5, clientID: id, user: "bob", pass: "bob-pw", sessionExp: 3600})
			if code == 0 {
				topic, payload, _ := bob2.nextPublish(v5, 2*time.Second)
				t.Fatalf("bob resumed alice's session (present %v) and got %s %q", present, topic, payload)
			}

			// The owner resumes it and gets the message.
			again := dialMQTT(t, g.mqttPort)
			present, code = again.connack(owner)
			if code != 0 || !present {
				t.Fatalf("alice resuming: code %#x, session present %v", code, present)
			}
			topic, payload, ok := again.nextPublish(v5, 5*time.Second)
			if !ok || topic != "myhome/secret" || string(payload) != "for-alice-only" {
				t.Fatalf("alice's queued message: %v %s %q", ok, topic, payload)
			}
		})
	}
	if !strings.Contains(g.log.String(), "(client id belongs to another user's session)") {
		t.Errorf("the refusal is not logged:\n%s", g.log.String())
	}
}

// Running out of file descriptors stops accepting only while it lasts:
// under a limit of 200 descriptors, 250 connections exhaust them; once
// they are closed, clients connect again. The outage is logged once.
func TestAttackListenerSurvivesEMFILE(t *testing.T) {
	need(t, "prlimit")
	g := startGW(t, t.TempDir(), anonHeader+limitsForFloods, "prlimit", "--nofile=200:200")
	var conns []net.Conn
	for range 250 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.mqttPort), 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	eventually(t, 10*time.Second, "the accept error logged", func() bool {
		return strings.Contains(g.log.String(), "listener cannot accept connections")
	})
	for _, c := range conns {
		_ = c.Close()
	}
	eventually(t, 20*time.Second, "a client accepted again", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.mqttPort), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
		rc.send(connectPacket(connectOpts{clientID: "after-emfile", clean: true}))
		h, body, err := rc.read(time.Second)
		return err == nil && h == 0x20 && len(body) == 2 && body[1] == 0
	})
	eventually(t, 10*time.Second, "recovery logged and /readyz ready", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", g.httpPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.Contains(g.log.String(), "listener accepting connections again")
	})
	if n := strings.Count(g.log.String(), "listener cannot accept connections"); n != 1 {
		t.Errorf("the outage logged %d times, want once", n)
	}
	g.stop()
}

// limitsForFloods lifts the broker's per-address limits for tests that
// open many connections from 127.0.0.1 on purpose.
const limitsForFloods = `  limits: {connect_rate: 100000, max_pending_connections: 100000}
`

// Connections that never complete CONNECT are closed after
// limits.connect_timeout, at most limits.max_pending_connections of them
// exist at once, and one address may open limits.connect_rate per second.
func TestAttackConnectionsWithoutConnect(t *testing.T) {
	g := startGW(t, t.TempDir(), anonHeader+`  limits: {connect_timeout: 1s, max_pending_connections: 20, connect_rate: 1000}
`)
	addr := fmt.Sprintf("127.0.0.1:%d", g.mqttPort)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}

	// Silent, and a CONNECT cut in the middle: both closed by the timeout.
	silent := dial()
	half := dial()
	full := connectPacket(connectOpts{clientID: "half", clean: true})
	if _, err := half.Write(full[:len(full)/2]); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(silent, 5*time.Second) || !closedWithin(half, 5*time.Second) {
		t.Fatal("a connection without a complete CONNECT was not closed after connect_timeout")
	}
	time.Sleep(200 * time.Millisecond) // the gateway has counted them out

	// 20 pending at once: the 21st is closed at once, a real client
	// still gets in once they are gone.
	var held []net.Conn
	for range 20 {
		held = append(held, dial())
	}
	time.Sleep(200 * time.Millisecond)
	extra := dial()
	if !closedWithin(extra, 500*time.Millisecond) {
		t.Fatal("connection beyond max_pending_connections was kept")
	}
	for _, c := range held {
		c.Close()
	}
	eventually(t, 5*time.Second, "a client connects after the flood", func() bool {
		rc := &rawConn{t: t, c: dial()}
		rc.r = bufio.NewReader(rc.c)
		rc.send(connectPacket(connectOpts{clientID: "real", clean: true}))
		h, body, err := rc.read(time.Second)
		return err == nil && h == 0x20 && len(body) == 2 && body[1] == 0
	})
	eventually(t, 10*time.Second, "the refusal logged", func() bool {
		log := g.log.String()
		return strings.Contains(log, "connection refused: addr=127.0.0.1:") && strings.Contains(log, "limits.max_pending_connections")
	})
}

// One address opening connections faster than limits.connect_rate has the
// excess closed at once; 127.0.0.1 is exempt.
func TestAttackConnectionRatePerAddress(t *testing.T) {
	g := startGW(t, t.TempDir(), anonHeader+`  limits: {connect_rate: 5}
`)
	var conns []net.Conn
	// From 127.0.0.2: 127.0.0.1, the gateway's own processes, is exempt.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	for range 40 {
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.mqttPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	refused := 0
	time.Sleep(300 * time.Millisecond)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			refused++
		}
	}
	if refused < 20 {
		t.Fatalf("%d of 40 quick connections from one address were refused with connect_rate 5, want most", refused)
	}
	if !strings.Contains(g.log.String(), "limits.connect_rate") {
		t.Errorf("refusal not logged:\n%s", g.log.String())
	}
}

// One message larger than the upstream's maximum packet size is set aside
// (counted, logged with its topic and size) and the messages after it are
// forwarded: announced by an MQTT 5 CONNACK, configured for 3.1.1, and for
// a 3.1.1 upstream that just closes the connection.
func TestAttackOversizeMessageBlocksBridge(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	for _, tc := range []struct {
		name, protocol, extra, counter string
	}{
		{"mqtt5-connack", "5", "", "too_large"},
		{"mqtt311-configured", "3.1.1", "    max_packet_size: 2000\n", "too_large"},
		{"mqtt311-unannounced", "3.1.1", "    backoff: {min: 100ms, max: 200ms}\n", "poison"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startMosquitto(t, 0, "max_packet_size 2000")
			s := startSub(t, "-h", "127.0.0.1", "-p", fmt.Sprint(up.port), "-t", "sites/#", "-q", "1")
			time.Sleep(300 * time.Millisecond)
			cfg := fmt.Sprintf(anonHeader+`bridge:
  upstream:
    url: mqtt://127.0.0.1:%d
    protocol: "%s"
%s  forward:
    - {filter: "myhome/#", prefix: "sites/{gateway}/", qos: 1}
`, up.port, tc.protocol, tc.extra)
			g := startGW(t, t.TempDir(), cfg)
			pub := func(topic, payload string) {
				t.Helper()
				if out, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-q", "1", "-t", topic, "-m", payload); err != nil {
					t.Fatalf("publish: %v: %s", err, out)
				}
			}
			pub("myhome/before", "1")
			pub("myhome/big", strings.Repeat("x", 5000))
			for i := range 5 {
				pub("myhome/after", fmt.Sprint(i))
			}
			eventually(t, 60*time.Second, "the messages after the big one upstream", func() bool {
				return s.has("sites/e2e/myhome/after 4")
			})
			for _, l := range s.snapshot() {
				if strings.HasPrefix(l, "sites/e2e/myhome/big") {
					t.Fatal("the oversized message arrived upstream")
				}
			}
			if !strings.Contains(g.metrics(t), `fieldgate_bridge_dropped_total{reason="`+tc.counter+`"} 1`) {
				t.Errorf("not counted as %s:\n%s", tc.counter, g.metrics(t))
			}
			log := g.log.String()
			if strings.Count(log, "message set aside") != 1 || !strings.Contains(log, "topic=sites/e2e/myhome/big") {
				t.Errorf("want one log line naming the topic and size:\n%s", log)
			}
		})
	}
}

// check warns (exit 0) when the local broker accepts packets the upstream
// cannot take, and when the ops endpoint listens on every interface.
func TestCheckWarnsSecurity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fieldgate.yaml")
	cfg := `gateway:
  id: w
  data_dir: ` + filepath.Join(dir, "data") + `
  http: {address: ":9180"}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:1883"}]
  auth: {anonymous: true}
bridge:
  upstream: {url: "mqtt://127.0.0.1:1884", protocol: "3.1.1", max_packet_size: 128KiB}
  forward: [{filter: "a/#", qos: 1}]
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runBin(t, "", "check", "--config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{
		"warning: broker.limits.max_packet_size (262144 bytes) is larger than bridge.upstream.max_packet_size (131072)",
		`warning: gateway.http.address ":9180" listens on every interface`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

// A web page cannot open the websocket listener: an upgrade carrying a
// browser Origin is refused unless allowed_origins lists it; MQTT clients
// that send no Origin are not affected.
func TestAttackWebsocketOrigin(t *testing.T) {
	wsPort := freePort(t)
	cfg := fmt.Sprintf(anonHeader+`    - {type: websocket, address: "127.0.0.1:%d", allowed_origins: ["https://dashboard.example.com"]}
`, wsPort)
	cfg = strings.Replace(cfg, "  auth: {anonymous: true}\n", "", 1) + "  auth: {anonymous: true}\n"
	g := startGW(t, t.TempDir(), cfg)
	upgrade := func(origin string) string {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", wsPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		req := fmt.Sprintf("GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n", wsPort)
		if origin != "" {
			req += "Origin: " + origin + "\r\n"
		}
		if _, err := c.Write([]byte(req + "\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	for _, tc := range []struct{ origin, want string }{
		{"http://evil.example", "HTTP/1.1 403 Forbidden"},
		{"http://192.168.1.50:8080", "HTTP/1.1 403 Forbidden"},
		{"", "HTTP/1.1 101 Switching Protocols"},
		{"https://dashboard.example.com", "HTTP/1.1 101 Switching Protocols"},
		{fmt.Sprintf("https://127.0.0.1:%d", wsPort), "HTTP/1.1 101 Switching Protocols"}, // paho's Python client
	} {
		if got := upgrade(tc.origin); got != tc.want {
			t.Errorf("Origin %q: %q, want %q", tc.origin, got, tc.want)
		}
	}
	if !strings.Contains(g.log.String(), "websocket connection refused: addr=127.0.0.1:") {
		t.Errorf("refusal not logged:\n%s", g.log.String())
	}
}

// A client allowed "myhome/#" cannot publish a device's readings or its
// retained availability: those topics belong to the gateway. A rule that
// names the topic exactly grants it; /set topics stay under the ACL.
func TestAttackDeviceTopicsOwnedByGateway(t *testing.T) {
	cfg := fmt.Sprintf(`gateway:
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
      - {username: alice, publish: ["myhome/#"], subscribe: ["myhome/#"]}
      - {username: bob, publish: ["myhome/livingroom/demo/door"], subscribe: ["myhome/#"]}
devices:
  - name: demo
    driver: sim
    poll: 1h
    topic: "myhome/livingroom/{device}/{point}"
    points: [{name: temperature, sim: constant, value: 21}, {name: door, sim: constant, value: 0}]
`, bcryptHash(t, "alice-pw"), bcryptHash(t, "bob-pw"))
	g := startGW(t, t.TempDir(), cfg)
	s := startSub(t, alice(g, "-t", "myhome/#", "-q", "1")...)
	waitSubscribed(t, s, func(topic, payload string) {
		_, _ = mosqPub(alice(g, "-q", "1", "-t", topic, "-m", payload)...)
	}, "myhome/probe")
	for _, v := range []string{"mqttv311", "mqttv5"} {
		_, _ = mosqPub(alice(g, "-V", v, "-q", "0", "-t", "myhome/livingroom/demo/temperature", "-m", "spoofed-"+v)...)
		_, _ = mosqPub(alice(g, "-V", v, "-q", "1", "-r", "-t", "myhome/livingroom/demo/availability", "-m", "spoofed-"+v)...)
	}
	if out, err := mosqPub(bob(g, "-q", "1", "-t", "myhome/livingroom/demo/door", "-m", "granted")...); err != nil {
		t.Fatalf("explicitly granted publish: %v: %s", err, out)
	}
	eventually(t, 5*time.Second, "the explicitly granted publish", func() bool { return s.has("myhome/livingroom/demo/door granted") })
	for _, l := range s.snapshot() {
		if strings.Contains(l, "spoofed") {
			t.Fatalf("a client published on a device topic: %s", l)
		}
	}
	if !strings.Contains(g.log.String(), "publish denied by ACL: user=alice") ||
		!strings.Contains(g.log.String(), "(a device topic, owned by the gateway)") {
		t.Errorf("refusal not logged:\n%s", g.log.String())
	}
}

// check refuses a forward route whose upstream topic space overlaps a
// subscribe route (a command loop past the local ACL) or the status topic.
func TestCheckRefusesRouteLoops(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fieldgate.yaml")
	cfg := `gateway:
  id: w
  data_dir: ` + filepath.Join(dir, "data") + `
broker:
  listeners: [{type: tcp, address: "127.0.0.1:1883"}]
  auth: {anonymous: true}
bridge:
  upstream: {url: "mqtt://127.0.0.1:1884", protocol: "3.1.1"}
  forward:
    - {filter: "#", prefix: "sites/{gateway}/", qos: 1}
  subscribe:
    - {filter: "sites/{gateway}/cmd/#", strip_prefix: "sites/{gateway}/cmd/"}
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runBin(t, "", "check", "--config", path)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d: %s%s", code, exitConfig, out, errOut)
	}
	for _, want := range []string{
		`bridge.forward[0].filter (line 10): forwards to "sites/{gateway}/#" upstream, which overlaps subscribe[0].filter "sites/{gateway}/cmd/#"`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
}

// Malformed CONNECT, PUBLISH and SUBSCRIBE packets that mochi accepted are
// refused: the connection is closed without a positive acknowledgement.
func TestAttackMalformedPackets(t *testing.T) {
	g := startGW(t, t.TempDir(), anonHeader)
	conn := func(t *testing.T) *rawConn {
		rc := dialMQTT(t, g.mqttPort)
		if _, code := rc.connack(connectOpts{clientID: "m", clean: true}); code != 0 {
			t.Fatalf("CONNACK %#x", code)
		}
		return rc
	}
	rawConnect := func(flags byte, payload ...string) []byte {
		body := append(mqttStr("MQTT"), 4, flags, 0, 60)
		for _, p := range payload {
			body = append(body, mqttStr(p)...)
		}
		return mqttPacket(0x10, body)
	}
	for _, tc := range []struct {
		name    string
		connect bool // the packet is the CONNECT itself
		pkt     []byte
	}{
		{"will QoS without will flag", true, rawConnect(0x02|0x08, "c1")},
		{"wildcard will topic", true, connectPacket(connectOpts{clientID: "c2", clean: true, willTopic: "a/+/b"})},
		{"password without user name", true, rawConnect(0x02|0x40, "c3", "pw")},
		{"NUL in client id", true, rawConnect(0x02, "c\x004")},
		{"client id not UTF-8", true, rawConnect(0x02, "c\xff5")},
		{"wildcard in publish topic", false, publishPacket(false, "a/#", 1, false, 1, []byte("x"))},
		{"NUL in publish topic", false, publishPacket(false, "a\x00b", 1, false, 1, []byte("x"))},
		{"retained with a 40000-byte topic", false, publishPacket(false, strings.Repeat("t", 40000), 1, true, 1, []byte("x"))},
		{"empty subscription filter", false, subscribePacket(false, "", 1)},
		{"subscription filter not UTF-8", false, subscribePacket(false, "a/\xfe", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rc *rawConn
			if tc.connect {
				rc = dialMQTT(t, g.mqttPort)
			} else {
				rc = conn(t)
			}
			rc.send(tc.pkt)
			h, body, err := rc.read(5 * time.Second)
			if err == nil {
				t.Fatalf("the server answered %#x %x instead of closing the connection", h, body)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the connection stayed open")
			}
		})
	}
	if !strings.Contains(g.log.String(), "malformed packet, connection closed") {
		t.Errorf("not logged:\n%s", g.log.String())
	}
}

// A QoS 1 publish to $SYS/… is acknowledged (and dropped), both protocol
// versions; MQTT 5 gets reason 0x87.
func TestAttackSysPublishGetsPuback(t *testing.T) {
	g := startGW(t, t.TempDir(), anonHeader)
	for _, v5 := range []bool{false, true} {
		rc := dialMQTT(t, g.mqttPort)
		if _, code := rc.connack(connectOpts{v5: v5, clientID: fmt.Sprint("sys", v5), clean: true}); code != 0 {
			t.Fatalf("CONNACK %#x", code)
		}
		rc.send(publishPacket(v5, "$SYS/broker/uptime", 1, false, 7, []byte("0")))
		h, body, err := rc.read(5 * time.Second)
		if err != nil || h != 0x40 || body[0] != 0 || body[1] != 7 {
			t.Fatalf("v5=%v: want PUBACK for packet 7, got %#x %x %v", v5, h, body, err)
		}
		if v5 && (len(body) < 3 || body[2] != 0x87) {
			t.Errorf("MQTT 5 PUBACK reason: %x, want 0x87", body)
		}
	}
}

// A FIFO as the configuration made check hang; an oversized file was read
// whole. Both are refused at once with a clear error.
func TestCheckRefusesFifoAndHugeConfig(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.yaml")
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 17<<20); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "not a regular file"},
		{huge, "more than the 16 MiB a configuration may have"},
	} {
		_, errOut, code := runBin(t, "", "check", "--config", tc.path)
		if code != exitConfig || !strings.Contains(errOut, tc.want) {
			t.Errorf("check %s: exit %d, %q; want exit %d and %q", filepath.Base(tc.path), code, errOut, exitConfig, tc.want)
		}
	}
}

// A data directory deleted under the running gateway: publishes are refused
// as on a full disk (MQTT 5 0x97, 3.1.1 closed without an ack), one log
// line, /readyz fails, the process keeps running.
func TestAttackDataDirDeleted(t *testing.T) {
	need(t, "mosquitto_pub")
	dir := t.TempDir()
	g := startGW(t, dir, bridgeConfig(freePort(t), ""))
	pub := func(version, payload string) (string, error) {
		return mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-V", version, "-q", "1", "-t", "myhome/seq", "-m", payload)
	}
	if out, err := pub("mqttv5", "stored"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if out, _ := pub("mqttv5", fmt.Sprint("refused-", i)); !strings.Contains(out, "Quota exceeded") {
			t.Fatalf("MQTT 5 publish into a deleted data dir: want a negative PUBACK (quota exceeded), got %q", out)
		}
	}
	if out, err := pub("mqttv311", "refused"); err == nil {
		t.Errorf("MQTT 3.1.1 publish into a deleted data dir was acknowledged: %q", out)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", g.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a deleted data dir: %d, want 503", resp.StatusCode)
	}
	select {
	case <-g.done:
		t.Fatalf("fieldgate exited:\n%s", g.log.String())
	default:
	}
	if n := strings.Count(g.log.String(), "data directory cannot be written"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, g.log.String())
	}
}

// The ops endpoint closes idle keep-alive connections.
func TestOpsClosesIdleConnections(t *testing.T) {
	g := startGW(t, t.TempDir(), anonHeader)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("unexpected data on an idle connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("an idle keep-alive connection to the ops endpoint was kept open for 30s")
	}
}

// poll: 1ns spun a core; a poll shorter than 10ms is refused.
func TestCheckRefusesTinyPoll(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fieldgate.yaml")
	cfg := `gateway: {id: w, data_dir: ` + filepath.Join(dir, "data") + `}
broker:
  listeners: [{type: tcp, address: "127.0.0.1:1883"}]
  auth: {anonymous: true}
devices:
  - {name: d, driver: sim, poll: 1ns, topic: "a/{device}/{point}", points: [{name: p, sim: constant, value: 1}]}
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runBin(t, "", "check", "--config", path)
	if code != exitConfig || !strings.Contains(errOut, "devices[0].poll (line 6): must be at least 10ms, got 1ns") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

// Refusals give one readable line each — a failed login, a publish the ACL
// denies (every QoS, both protocol versions), a denied subscription — and
// a client retrying in a loop cannot flood the log.
func TestRefusalsLoggedRateLimited(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	g := startGW(t, t.TempDir(), authConfig(t))
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, q := range []string{"0", "1", "2"} {
			_, _ = mosqPub(bob(g, "-V", v, "-q", q, "-i", "bob-"+v+"-"+q, "-t", "myhome/forbidden", "-m", "x")...)
		}
	}
	s := startSub(t, bob(g, "-i", "bob-sub", "-t", "secret/#", "-W", "2")...)
	<-s.done
	if _, err := mosqPub("-h", "127.0.0.1", "-p", fmt.Sprint(g.mqttPort), "-u", "alice", "-P", "wrong", "-i", "guesser", "-t", "x", "-m", "x"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	eventually(t, 5*time.Second, "the refusal lines", func() bool {
		log := g.log.String()
		for _, v := range []string{"mqttv311", "mqttv5"} {
			for _, q := range []string{"0", "1", "2"} {
				if !strings.Contains(log, "publish denied by ACL: user=bob client=bob-"+v+"-"+q+" topic=myhome/forbidden") {
					return false
				}
			}
		}
		return strings.Contains(log, "subscription denied by ACL: user=bob client=bob-sub filter=secret/#") &&
			strings.Contains(log, "login failed: user=alice client=guesser addr=127.0.0.1:") && strings.Contains(log, "(bad password)")
	})

	// A device retrying a denied publish in a loop: 5 lines, then one per 10s.
	rc := dialMQTT(t, g.mqttPort)
	if _, code := rc.connack(connectOpts{v5: true, clientID: "looper", clean: true, user: "bob", pass: "bob-pw"}); code != 0 {
		t.Fatalf("CONNACK %#x", code)
	}
	for i := range 200 {
		rc.send(publishPacket(true, "myhome/forbidden", 1, false, uint16(i+1), []byte("x")))
	}
	eventually(t, 5*time.Second, "the looping client's acknowledgements", func() bool {
		return strings.Contains(g.log.String(), "client=looper")
	})
	time.Sleep(500 * time.Millisecond)
	if n := strings.Count(g.log.String(), "client=looper"); n > logBurstForTest {
		t.Errorf("%d log lines for 200 denied publishes of one client, want at most %d", n, logBurstForTest)
	}
}

// logBurstForTest is the broker's per-client burst of refusal lines.
const logBurstForTest = 5

// Protocol errors are logged without the packet (payload included), at
// most a few lines per client; a short keepalive is not warned about
// before authentication.
func TestProtocolErrorsDoNotFloodLog(t *testing.T) {
	g := startGW(t, t.TempDir(), anonHeader)
	payload := []byte(strings.Repeat("SECRETPAYLOAD", 1000))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	for i := range 60 {
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.mqttPort))
		if err != nil {
			continue // refused by connect_rate
		}
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(connectPacket(connectOpts{clientID: "bad", clean: true, keepalive: 1}))
		// QoS 1 PUBLISH with packet id 0: a protocol error.
		_, _ = c.Write(publishPacket(false, fmt.Sprint("t/", i), 1, false, 0, payload))
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	log := g.log.String()
	if strings.Contains(log, "SECRETPAYLOAD") {
		t.Fatal("a payload reached the log")
	}
	if strings.Contains(log, "keepalive is below minimum") {
		t.Error("the pre-authentication keepalive warning is still logged at info level")
	}
	if n := strings.Count(log, "\n"); n > 40 {
		t.Errorf("%d log lines (%d bytes) for 60 bad packets from one address", n, len(log))
	}
}
