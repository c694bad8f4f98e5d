package broker

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaults(t *testing.T) {
	var c Config
	c.Defaults()
	want := Config{
		Listeners:   []ListenerConfig{{Type: "tcp", Address: "0.0.0.0:1883"}},
		SysInterval: 10 * time.Second,
		Limits: LimitsConfig{MaxClients: 1000, MaxPacketSize: 256 << 10, ReceiveMaximum: 256, MaxInflight: 1024,
			MaxQueuedMessages: 2048, MaxKeepalive: 5 * time.Minute, MaxSessionExpiry: new(168 * time.Hour),
			TopicAliasMaximum: new(64), DeliveryWait: new(time.Second), WhenQueueFull: "drop"},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("Defaults (-want +got):\n%s", diff)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

// An explicit delivery_wait of 0 (never wait for a full queue) is kept;
// only an absent one gets the default.
func TestDefaultsKeepExplicitZeroDeliveryWait(t *testing.T) {
	c := Config{Limits: LimitsConfig{DeliveryWait: durationOf(0), WhenQueueFull: QueueFullDisconnect}}
	c.Defaults()
	if *c.Limits.DeliveryWait != 0 || c.Limits.WhenQueueFull != QueueFullDisconnect {
		t.Fatalf("Defaults changed delivery_wait 0 to %s, when_queue_full to %q", *c.Limits.DeliveryWait, c.Limits.WhenQueueFull)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateReportsEveryProblemWithPath(t *testing.T) {
	pki := newTestPKI(t, t.TempDir())
	missing := filepath.Join(t.TempDir(), "missing.pem")
	c := Config{
		Listeners: []ListenerConfig{
			{Type: "tcp", Address: "127.0.0.1:1883"}, // fine
			{Type: "udp", Address: "nope"},           // bad type, bad address
			{Type: "tls", Address: ":8883"},          // tls block missing
			{Type: "tls", Address: ":8884", TLS: &TLSConfig{CertFile: missing, KeyFile: pki.serverKey, ClientCAFile: pki.serverKey}},
			{Type: "tcp", Address: ":99999", TLS: &TLSConfig{}},                                                            // bad port, tls on tcp
			{Type: "websocket", Address: "127.0.0.1:0", TLS: &TLSConfig{CertFile: pki.serverCert, KeyFile: pki.serverKey}}, // fine (wss)
		},
		Auth: AuthConfig{
			Users: []UserConfig{{Username: "a", PasswordHash: hashFor(t, "x")}, {Username: "a", PasswordHash: "plain"}, {Username: "*"}},
			ACL: []ACLRule{
				{Username: "a", Publish: []string{"ok/{username}/#", "bad/#/x"}, Subscribe: []string{"{nope}/x"}},
				{Publish: []string{"x"}},
				{Username: "b"},
			},
		},
		SysInterval: 1500 * time.Millisecond,
	}
	c.Defaults()
	c.Limits.MaxInflight = 70000
	c.Limits.ReceiveMaximum = -1
	c.Limits.MaxKeepalive = 100000 * time.Second
	c.Limits.DeliveryWait = durationOf(-time.Second)
	c.Limits.WhenQueueFull = "block"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a broken config")
	}
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v is not a *FieldError", e)
		}
		paths = append(paths, fe.FieldPath())
	}
	want := []string{
		"listeners[1].type", "listeners[1].address",
		"listeners[2].tls",
		"listeners[3].tls.cert_file", "listeners[3].tls.client_ca_file",
		"listeners[4].tls", "listeners[4].address",
		"auth.users[1].username", "auth.users[1].password_hash",
		"auth.users[2].username", "auth.users[2].password_hash",
		"auth.acl[0].publish[1]", "auth.acl[0].subscribe[0]",
		"auth.acl[1].username",
		"auth.acl[2]",
		"limits.receive_maximum", "limits.max_inflight", "limits.max_queued_messages", "limits.max_keepalive",
		"limits.delivery_wait", "limits.when_queue_full",
		"sys_interval",
	}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Fatalf("error paths (-want +got):\n%s\nerrors:\n%v", diff, err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	_, err := New(Config{Listeners: []ListenerConfig{{Type: "tcp"}}}, Options{DataDir: t.TempDir(), Logger: testLogger(t)})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "listeners[0].address" {
		t.Fatalf("New: %v, want a FieldError for listeners[0].address", err)
	}
	if _, err := New(anonCfg(), Options{Logger: testLogger(t)}); err == nil {
		t.Fatal("New accepted an empty DataDir")
	}
}

func TestRunFailsWhenAListenerCannotBind(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := anonCfg()
	cfg.Listeners = append(cfg.Listeners, ListenerConfig{Type: ListenerTCP, Address: busy.Addr().String()})
	b, err := New(cfg, Options{DataDir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(t.Context()); err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Run: %v, want a bind error naming %s", err, busy.Addr())
	}
}

func TestAnonymousOnNonLoopbackWarns(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil)) // read only after Run has returned
	for _, tc := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		buf.Reset()
		cfg := anonCfg()
		cfg.Listeners[0].Address = tc.addr
		b, err := New(cfg, Options{DataDir: t.TempDir(), Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		runCtx, stop := context.WithCancel(t.Context())
		go func() { done <- b.Run(runCtx) }()
		<-b.Ready()
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "anonymous access is enabled on a non-loopback listener"); got != tc.warn {
			t.Fatalf("%s: warning logged=%v, want %v; log:\n%s", tc.addr, got, tc.warn, buf.String())
		}
	}
}
