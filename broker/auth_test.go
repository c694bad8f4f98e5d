package broker

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestSubset(t *testing.T) {
	for _, tc := range []struct {
		req, filter string
		want        bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/+", true},
		{"a/b/c", "a/+", false},
		{"a", "a/#", true},
		{"a/b/c", "a/#", true},
		{"b/c", "a/#", false},
		{"a/+", "a/#", true},
		{"a/#", "a/#", true},
		{"a/#", "a/+", false},
		{"#", "a/#", false},
		{"+/b", "a/b", false},
		{"a/+/c", "a/+/c", true},
		{"$SYS/x", "#", false},
		{"$SYS/x", "+/x", false},
		{"$SYS/x", "$SYS/#", true},
		{"a", "+", true},
		{"a/b", "#", true},
	} {
		if got := subset(tc.req, tc.filter); got != tc.want {
			t.Errorf("subset(%q, %q) = %v, want %v", tc.req, tc.filter, got, tc.want)
		}
	}
}

func TestACL(t *testing.T) {
	p := compileAuth(AuthConfig{ACL: []ACLRule{
		{Username: "sensor1", Publish: []string{"myhome/#"}, Subscribe: []string{"myhome/+/set/#"}},
		{Username: "*", Subscribe: []string{"myhome/#"}, Deny: []string{"$SYS/#", "myhome/secret/#"}},
		{Username: "dev", Publish: []string{"devices/{username}/{clientid}/#"}},
		{Username: "gw", ClientID: "gw-1", Publish: []string{"up/#"}},
		{Username: "*", Publish: []string{"anon/{username}"}},
	}})
	for _, tc := range []struct {
		user, id, topic string
		write, want     bool
	}{
		{"sensor1", "s", "myhome/kitchen/temp", true, true},
		{"sensor1", "s", "other/x", true, false},
		{"sensor1", "s", "myhome/secret/x", true, false}, // deny wins over the allow
		{"sensor1", "s", "myhome/#", false, true},        // from the "*" rule
		{"", "anon", "myhome/+/temp", false, true},       // "*" covers anonymous clients
		{"", "anon", "myhome/x", true, false},
		{"", "anon", "myhome/secret/#", false, false},
		{"", "anon", "#", false, false},
		{"", "anon", "$SYS/broker/uptime", false, false},
		{"", "anon", "$share/g/myhome/x", false, true},
		{"dev", "d1", "devices/dev/d1/temp", true, true},
		{"dev", "d1", "devices/dev/d2/temp", true, false},
		{"dev", "a/#", "devices/dev/a/#", true, false}, // a client id with wildcards never widens a filter
		{"gw", "gw-1", "up/x", true, true},
		{"gw", "gw-2", "up/x", true, false},
		{"", "anon", "anon/", true, false}, // {username} never applies to anonymous clients
		{"bob", "b", "anon/bob", true, true},
	} {
		if got := p.allowed(tc.user, tc.id, tc.topic, tc.write); got != tc.want {
			t.Errorf("allowed(user %q, id %q, %q, write=%v) = %v, want %v", tc.user, tc.id, tc.topic, tc.write, got, tc.want)
		}
	}
	if !compileAuth(AuthConfig{}).allowed("", "x", "any/thing", true) {
		t.Error("an empty ACL must allow everything")
	}
}

func TestAuthenticate(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	p := compileAuth(AuthConfig{Users: []UserConfig{{Username: "u", PasswordHash: string(h)}}})
	for _, tc := range []struct {
		user, pw string
		want     bool
	}{{"u", "pw", true}, {"u", "bad", false}, {"x", "pw", false}, {"", "", false}} {
		if got := p.authenticate(tc.user, []byte(tc.pw)); got != tc.want {
			t.Errorf("authenticate(%q, %q) = %v", tc.user, tc.pw, got)
		}
	}
	if !compileAuth(AuthConfig{Anonymous: true}).authenticate("", nil) {
		t.Error("anonymous refused with anonymous: true")
	}
	if c, err := bcrypt.Cost(p.dummy); err != nil || c != bcrypt.MinCost {
		t.Errorf("dummy hash cost %d (%v), want the users' cost %d", c, err, bcrypt.MinCost)
	}
}

func TestRefusedSubscription311Is0x80(t *testing.T) {
	cfg := anonCfg()
	cfg.Auth.ACL = []ACLRule{{Username: "*", Subscribe: []string{"ok/#"}}}
	r := start(t, cfg, t.TempDir(), nil)
	c := dialRaw(t, r.addr(0))
	if _, err := c.Write(rawConnect("MQTT", 4, "s311")); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 4)
	body := []byte{0, 7}
	body = append(body, mqttString("ok/x")...)
	body = append(body, 1)
	body = append(body, mqttString("no/x")...)
	body = append(body, 1)
	if _, err := c.Write(packet(0x82, body)); err != nil {
		t.Fatal(err)
	}
	if got, want := readN(t, c, 6), []byte{0x90, 4, 0, 7, 1, 0x80}; !bytes.Equal(got, want) {
		t.Fatalf("SUBACK %x, want %x", got, want)
	}
}

func TestLimits(t *testing.T) {
	cfg := anonCfg()
	cfg.Limits.MaxClients = 1
	cfg.Limits.MaxPacketSize = 100
	r := start(t, cfg, t.TempDir(), nil)
	first := dialRaw(t, r.addr(0))
	if _, err := first.Write(rawConnect("MQTT", 4, "one")); err != nil {
		t.Fatal(err)
	}
	readN(t, first, 4)
	second := dialRaw(t, r.addr(0))
	if _, err := second.Write(rawConnect("MQTT", 4, "two")); err != nil {
		t.Fatal(err)
	}
	if got := readRest(t, second); !bytes.Equal(got, []byte{0x20, 2, 0, 3}) {
		t.Fatalf("over max_clients: %x, want CONNACK 0x03 (server unavailable)", got)
	}
	// A packet over max_packet_size ends the connection.
	if _, err := first.Write(rawPublishQoS1("big", 1, string(make([]byte, 200)))); err != nil {
		t.Fatal(err)
	}
	if got := readRest(t, first); len(got) != 0 {
		t.Fatalf("oversized packet: server sent %x, want close", got)
	}
}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	// One bcrypt operation at the default cost is slow under -race; the
	// hash is checked for form, the comparison is covered by TestAuthenticate.
	if c, err := bcrypt.Cost([]byte(h)); err != nil || c != bcrypt.DefaultCost {
		t.Fatalf("HashPassword: cost %d, %v", c, err)
	}
	if InProcessOrigin("bridge") != "$inproc/bridge" || InProcessOrigin("$inproc/x") != "$inproc/x" {
		t.Fatal("InProcessOrigin")
	}
}
